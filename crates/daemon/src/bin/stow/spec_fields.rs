//! The OCI runtime spec's fields as containerd 1.6 reads and writes them: the JSON names,
//! value kinds and which are left out when empty, for runtime-spec 1.0.2-dev (the version
//! containerd 1.6.20 is built with). Generated from that version's type definitions; a
//! spec passes through these tables so that `--config` records what ctr records.

/// The kind of a JSON value in the spec.
#[derive(Debug)]
pub enum Ty {
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// A signed integer.
    Int,
    /// An unsigned integer.
    Uint,
    /// An object with known fields.
    Struct(&'static [Field]),
    /// An optional value (absent or null when unset).
    Ptr(&'static Ty),
    /// An array.
    Slice(&'static Ty),
    /// An object of any keys.
    Map(&'static Ty),
    /// Any JSON value, kept as given.
    Any,
}

/// One field of an object.
#[derive(Debug)]
pub struct Field {
    /// Its JSON name.
    pub name: &'static str,
    /// Its kind.
    pub ty: Ty,
    /// Left out when empty (false, 0, "", unset, no elements).
    pub omitempty: bool,
}

const fn f(name: &'static str, ty: Ty, omitempty: bool) -> Field {
    Field {
        name,
        ty,
        omitempty,
    }
}

/// `Spec`.
pub const SPEC: &[Field] = &[
    f("ociVersion", Ty::Str, false),
    f("process", Ty::Ptr(&Ty::Struct(PROCESS)), true),
    f("root", Ty::Ptr(&Ty::Struct(ROOT)), true),
    f("hostname", Ty::Str, true),
    f("domainname", Ty::Str, true),
    f("mounts", Ty::Slice(&Ty::Struct(MOUNT)), true),
    f("hooks", Ty::Ptr(&Ty::Struct(HOOKS)), true),
    f("annotations", Ty::Map(&Ty::Str), true),
    f("linux", Ty::Ptr(&Ty::Struct(LINUX)), true),
    f("solaris", Ty::Ptr(&Ty::Struct(SOLARIS)), true),
    f("windows", Ty::Ptr(&Ty::Struct(WINDOWS)), true),
    f("vm", Ty::Ptr(&Ty::Struct(VM)), true),
    f("zos", Ty::Ptr(&Ty::Struct(ZOS)), true),
];

/// `Process`.
pub const PROCESS: &[Field] = &[
    f("terminal", Ty::Bool, true),
    f("consoleSize", Ty::Ptr(&Ty::Struct(BOX)), true),
    f("user", Ty::Struct(USER), false),
    f("args", Ty::Slice(&Ty::Str), true),
    f("commandLine", Ty::Str, true),
    f("env", Ty::Slice(&Ty::Str), true),
    f("cwd", Ty::Str, false),
    f(
        "capabilities",
        Ty::Ptr(&Ty::Struct(LINUX_CAPABILITIES)),
        true,
    ),
    f("rlimits", Ty::Slice(&Ty::Struct(POSIX_RLIMIT)), true),
    f("noNewPrivileges", Ty::Bool, true),
    f("apparmorProfile", Ty::Str, true),
    f("oomScoreAdj", Ty::Ptr(&Ty::Int), true),
    f("selinuxLabel", Ty::Str, true),
];

/// `LinuxCapabilities`.
pub const LINUX_CAPABILITIES: &[Field] = &[
    f("bounding", Ty::Slice(&Ty::Str), true),
    f("effective", Ty::Slice(&Ty::Str), true),
    f("inheritable", Ty::Slice(&Ty::Str), true),
    f("permitted", Ty::Slice(&Ty::Str), true),
    f("ambient", Ty::Slice(&Ty::Str), true),
];

/// `Box`.
pub const BOX: &[Field] = &[f("height", Ty::Uint, false), f("width", Ty::Uint, false)];

/// `User`.
pub const USER: &[Field] = &[
    f("uid", Ty::Uint, false),
    f("gid", Ty::Uint, false),
    f("umask", Ty::Ptr(&Ty::Uint), true),
    f("additionalGids", Ty::Slice(&Ty::Uint), true),
    f("username", Ty::Str, true),
];

/// `Root`.
pub const ROOT: &[Field] = &[f("path", Ty::Str, false), f("readonly", Ty::Bool, true)];

/// `Mount`.
pub const MOUNT: &[Field] = &[
    f("destination", Ty::Str, false),
    f("type", Ty::Str, true),
    f("source", Ty::Str, true),
    f("options", Ty::Slice(&Ty::Str), true),
    f(
        "uidMappings",
        Ty::Slice(&Ty::Struct(LINUX_ID_MAPPING)),
        true,
    ),
    f(
        "gidMappings",
        Ty::Slice(&Ty::Struct(LINUX_ID_MAPPING)),
        true,
    ),
];

/// `Hook`.
pub const HOOK: &[Field] = &[
    f("path", Ty::Str, false),
    f("args", Ty::Slice(&Ty::Str), true),
    f("env", Ty::Slice(&Ty::Str), true),
    f("timeout", Ty::Ptr(&Ty::Int), true),
];

/// `Hooks`.
pub const HOOKS: &[Field] = &[
    f("prestart", Ty::Slice(&Ty::Struct(HOOK)), true),
    f("createRuntime", Ty::Slice(&Ty::Struct(HOOK)), true),
    f("createContainer", Ty::Slice(&Ty::Struct(HOOK)), true),
    f("startContainer", Ty::Slice(&Ty::Struct(HOOK)), true),
    f("poststart", Ty::Slice(&Ty::Struct(HOOK)), true),
    f("poststop", Ty::Slice(&Ty::Struct(HOOK)), true),
];

/// `Linux`.
pub const LINUX: &[Field] = &[
    f(
        "uidMappings",
        Ty::Slice(&Ty::Struct(LINUX_ID_MAPPING)),
        true,
    ),
    f(
        "gidMappings",
        Ty::Slice(&Ty::Struct(LINUX_ID_MAPPING)),
        true,
    ),
    f("sysctl", Ty::Map(&Ty::Str), true),
    f("resources", Ty::Ptr(&Ty::Struct(LINUX_RESOURCES)), true),
    f("cgroupsPath", Ty::Str, true),
    f("namespaces", Ty::Slice(&Ty::Struct(LINUX_NAMESPACE)), true),
    f("devices", Ty::Slice(&Ty::Struct(LINUX_DEVICE)), true),
    f("seccomp", Ty::Ptr(&Ty::Struct(LINUX_SECCOMP)), true),
    f("rootfsPropagation", Ty::Str, true),
    f("maskedPaths", Ty::Slice(&Ty::Str), true),
    f("readonlyPaths", Ty::Slice(&Ty::Str), true),
    f("mountLabel", Ty::Str, true),
    f("intelRdt", Ty::Ptr(&Ty::Struct(LINUX_INTEL_RDT)), true),
    f("personality", Ty::Ptr(&Ty::Struct(LINUX_PERSONALITY)), true),
];

/// `LinuxNamespace`.
pub const LINUX_NAMESPACE: &[Field] = &[f("type", Ty::Str, false), f("path", Ty::Str, true)];

/// `LinuxIDMapping`.
pub const LINUX_ID_MAPPING: &[Field] = &[
    f("containerID", Ty::Uint, false),
    f("hostID", Ty::Uint, false),
    f("size", Ty::Uint, false),
];

/// `POSIXRlimit`.
pub const POSIX_RLIMIT: &[Field] = &[
    f("type", Ty::Str, false),
    f("hard", Ty::Uint, false),
    f("soft", Ty::Uint, false),
];

/// `LinuxHugepageLimit`.
pub const LINUX_HUGEPAGE_LIMIT: &[Field] =
    &[f("pageSize", Ty::Str, false), f("limit", Ty::Uint, false)];

/// `LinuxInterfacePriority`.
pub const LINUX_INTERFACE_PRIORITY: &[Field] =
    &[f("name", Ty::Str, false), f("priority", Ty::Uint, false)];

/// `LinuxWeightDevice`.
pub const LINUX_WEIGHT_DEVICE: &[Field] = &[
    f("major", Ty::Int, false),
    f("minor", Ty::Int, false),
    f("weight", Ty::Ptr(&Ty::Uint), true),
    f("leafWeight", Ty::Ptr(&Ty::Uint), true),
];

/// `LinuxThrottleDevice`.
pub const LINUX_THROTTLE_DEVICE: &[Field] = &[
    f("major", Ty::Int, false),
    f("minor", Ty::Int, false),
    f("rate", Ty::Uint, false),
];

/// `LinuxBlockIO`.
pub const LINUX_BLOCK_IO: &[Field] = &[
    f("weight", Ty::Ptr(&Ty::Uint), true),
    f("leafWeight", Ty::Ptr(&Ty::Uint), true),
    f(
        "weightDevice",
        Ty::Slice(&Ty::Struct(LINUX_WEIGHT_DEVICE)),
        true,
    ),
    f(
        "throttleReadBpsDevice",
        Ty::Slice(&Ty::Struct(LINUX_THROTTLE_DEVICE)),
        true,
    ),
    f(
        "throttleWriteBpsDevice",
        Ty::Slice(&Ty::Struct(LINUX_THROTTLE_DEVICE)),
        true,
    ),
    f(
        "throttleReadIOPSDevice",
        Ty::Slice(&Ty::Struct(LINUX_THROTTLE_DEVICE)),
        true,
    ),
    f(
        "throttleWriteIOPSDevice",
        Ty::Slice(&Ty::Struct(LINUX_THROTTLE_DEVICE)),
        true,
    ),
];

/// `LinuxMemory`.
pub const LINUX_MEMORY: &[Field] = &[
    f("limit", Ty::Ptr(&Ty::Int), true),
    f("reservation", Ty::Ptr(&Ty::Int), true),
    f("swap", Ty::Ptr(&Ty::Int), true),
    f("kernel", Ty::Ptr(&Ty::Int), true),
    f("kernelTCP", Ty::Ptr(&Ty::Int), true),
    f("swappiness", Ty::Ptr(&Ty::Uint), true),
    f("disableOOMKiller", Ty::Ptr(&Ty::Bool), true),
    f("useHierarchy", Ty::Ptr(&Ty::Bool), true),
    f("checkBeforeUpdate", Ty::Ptr(&Ty::Bool), true),
];

/// `LinuxCPU`.
pub const LINUX_CPU: &[Field] = &[
    f("shares", Ty::Ptr(&Ty::Uint), true),
    f("quota", Ty::Ptr(&Ty::Int), true),
    f("burst", Ty::Ptr(&Ty::Uint), true),
    f("period", Ty::Ptr(&Ty::Uint), true),
    f("realtimeRuntime", Ty::Ptr(&Ty::Int), true),
    f("realtimePeriod", Ty::Ptr(&Ty::Uint), true),
    f("cpus", Ty::Str, true),
    f("mems", Ty::Str, true),
    f("idle", Ty::Ptr(&Ty::Int), true),
];

/// `LinuxPids`.
pub const LINUX_PIDS: &[Field] = &[f("limit", Ty::Int, false)];

/// `LinuxNetwork`.
pub const LINUX_NETWORK: &[Field] = &[
    f("classID", Ty::Ptr(&Ty::Uint), true),
    f(
        "priorities",
        Ty::Slice(&Ty::Struct(LINUX_INTERFACE_PRIORITY)),
        true,
    ),
];

/// `LinuxRdma`.
pub const LINUX_RDMA: &[Field] = &[
    f("hcaHandles", Ty::Ptr(&Ty::Uint), true),
    f("hcaObjects", Ty::Ptr(&Ty::Uint), true),
];

/// `LinuxResources`.
pub const LINUX_RESOURCES: &[Field] = &[
    f("devices", Ty::Slice(&Ty::Struct(LINUX_DEVICE_CGROUP)), true),
    f("memory", Ty::Ptr(&Ty::Struct(LINUX_MEMORY)), true),
    f("cpu", Ty::Ptr(&Ty::Struct(LINUX_CPU)), true),
    f("pids", Ty::Ptr(&Ty::Struct(LINUX_PIDS)), true),
    f("blockIO", Ty::Ptr(&Ty::Struct(LINUX_BLOCK_IO)), true),
    f(
        "hugepageLimits",
        Ty::Slice(&Ty::Struct(LINUX_HUGEPAGE_LIMIT)),
        true,
    ),
    f("network", Ty::Ptr(&Ty::Struct(LINUX_NETWORK)), true),
    f("rdma", Ty::Map(&Ty::Struct(LINUX_RDMA)), true),
    f("unified", Ty::Map(&Ty::Str), true),
];

/// `LinuxDevice`.
pub const LINUX_DEVICE: &[Field] = &[
    f("path", Ty::Str, false),
    f("type", Ty::Str, false),
    f("major", Ty::Int, false),
    f("minor", Ty::Int, false),
    f("fileMode", Ty::Ptr(&Ty::Uint), true),
    f("uid", Ty::Ptr(&Ty::Uint), true),
    f("gid", Ty::Ptr(&Ty::Uint), true),
];

/// `LinuxDeviceCgroup`.
pub const LINUX_DEVICE_CGROUP: &[Field] = &[
    f("allow", Ty::Bool, false),
    f("type", Ty::Str, true),
    f("major", Ty::Ptr(&Ty::Int), true),
    f("minor", Ty::Ptr(&Ty::Int), true),
    f("access", Ty::Str, true),
];

/// `LinuxPersonality`.
pub const LINUX_PERSONALITY: &[Field] = &[
    f("domain", Ty::Str, false),
    f("flags", Ty::Slice(&Ty::Str), true),
];

/// `Solaris`.
pub const SOLARIS: &[Field] = &[
    f("milestone", Ty::Str, true),
    f("limitpriv", Ty::Str, true),
    f("maxShmMemory", Ty::Str, true),
    f("anet", Ty::Slice(&Ty::Struct(SOLARIS_ANET)), true),
    f("cappedCPU", Ty::Ptr(&Ty::Struct(SOLARIS_CAPPED_CPU)), true),
    f(
        "cappedMemory",
        Ty::Ptr(&Ty::Struct(SOLARIS_CAPPED_MEMORY)),
        true,
    ),
];

/// `SolarisCappedCPU`.
pub const SOLARIS_CAPPED_CPU: &[Field] = &[f("ncpus", Ty::Str, true)];

/// `SolarisCappedMemory`.
pub const SOLARIS_CAPPED_MEMORY: &[Field] =
    &[f("physical", Ty::Str, true), f("swap", Ty::Str, true)];

/// `SolarisAnet`.
pub const SOLARIS_ANET: &[Field] = &[
    f("linkname", Ty::Str, true),
    f("lowerLink", Ty::Str, true),
    f("allowedAddress", Ty::Str, true),
    f("configureAllowedAddress", Ty::Str, true),
    f("defrouter", Ty::Str, true),
    f("linkProtection", Ty::Str, true),
    f("macAddress", Ty::Str, true),
];

/// `Windows`.
pub const WINDOWS: &[Field] = &[
    f("layerFolders", Ty::Slice(&Ty::Str), false),
    f("devices", Ty::Slice(&Ty::Struct(WINDOWS_DEVICE)), true),
    f("resources", Ty::Ptr(&Ty::Struct(WINDOWS_RESOURCES)), true),
    f("credentialSpec", Ty::Any, true),
    f("servicing", Ty::Bool, true),
    f("ignoreFlushesDuringBoot", Ty::Bool, true),
    f("hyperv", Ty::Ptr(&Ty::Struct(WINDOWS_HYPER_V)), true),
    f("network", Ty::Ptr(&Ty::Struct(WINDOWS_NETWORK)), true),
];

/// `WindowsDevice`.
pub const WINDOWS_DEVICE: &[Field] = &[f("id", Ty::Str, false), f("idType", Ty::Str, false)];

/// `WindowsResources`.
pub const WINDOWS_RESOURCES: &[Field] = &[
    f(
        "memory",
        Ty::Ptr(&Ty::Struct(WINDOWS_MEMORY_RESOURCES)),
        true,
    ),
    f("cpu", Ty::Ptr(&Ty::Struct(WINDOWS_CPU_RESOURCES)), true),
    f(
        "storage",
        Ty::Ptr(&Ty::Struct(WINDOWS_STORAGE_RESOURCES)),
        true,
    ),
];

/// `WindowsMemoryResources`.
pub const WINDOWS_MEMORY_RESOURCES: &[Field] = &[f("limit", Ty::Ptr(&Ty::Uint), true)];

/// `WindowsCPUResources`.
pub const WINDOWS_CPU_RESOURCES: &[Field] = &[
    f("count", Ty::Ptr(&Ty::Uint), true),
    f("shares", Ty::Ptr(&Ty::Uint), true),
    f("maximum", Ty::Ptr(&Ty::Uint), true),
];

/// `WindowsStorageResources`.
pub const WINDOWS_STORAGE_RESOURCES: &[Field] = &[
    f("iops", Ty::Ptr(&Ty::Uint), true),
    f("bps", Ty::Ptr(&Ty::Uint), true),
    f("sandboxSize", Ty::Ptr(&Ty::Uint), true),
];

/// `WindowsNetwork`.
pub const WINDOWS_NETWORK: &[Field] = &[
    f("endpointList", Ty::Slice(&Ty::Str), true),
    f("allowUnqualifiedDNSQuery", Ty::Bool, true),
    f("DNSSearchList", Ty::Slice(&Ty::Str), true),
    f("networkSharedContainerName", Ty::Str, true),
    f("networkNamespace", Ty::Str, true),
];

/// `WindowsHyperV`.
pub const WINDOWS_HYPER_V: &[Field] = &[f("utilityVMPath", Ty::Str, true)];

/// `VM`.
pub const VM: &[Field] = &[
    f("hypervisor", Ty::Struct(VM_HYPERVISOR), true),
    f("kernel", Ty::Struct(VM_KERNEL), false),
    f("image", Ty::Struct(VM_IMAGE), true),
];

/// `VMHypervisor`.
pub const VM_HYPERVISOR: &[Field] = &[
    f("path", Ty::Str, false),
    f("parameters", Ty::Slice(&Ty::Str), true),
];

/// `VMKernel`.
pub const VM_KERNEL: &[Field] = &[
    f("path", Ty::Str, false),
    f("parameters", Ty::Slice(&Ty::Str), true),
    f("initrd", Ty::Str, true),
];

/// `VMImage`.
pub const VM_IMAGE: &[Field] = &[f("path", Ty::Str, false), f("format", Ty::Str, false)];

/// `LinuxSeccomp`.
pub const LINUX_SECCOMP: &[Field] = &[
    f("defaultAction", Ty::Str, false),
    f("defaultErrnoRet", Ty::Ptr(&Ty::Uint), true),
    f("architectures", Ty::Slice(&Ty::Str), true),
    f("flags", Ty::Slice(&Ty::Str), true),
    f("listenerPath", Ty::Str, true),
    f("listenerMetadata", Ty::Str, true),
    f("syscalls", Ty::Slice(&Ty::Struct(LINUX_SYSCALL)), true),
];

/// `LinuxSeccompArg`.
pub const LINUX_SECCOMP_ARG: &[Field] = &[
    f("index", Ty::Uint, false),
    f("value", Ty::Uint, false),
    f("valueTwo", Ty::Uint, true),
    f("op", Ty::Str, false),
];

/// `LinuxSyscall`.
pub const LINUX_SYSCALL: &[Field] = &[
    f("names", Ty::Slice(&Ty::Str), false),
    f("action", Ty::Str, false),
    f("errnoRet", Ty::Ptr(&Ty::Uint), true),
    f("args", Ty::Slice(&Ty::Struct(LINUX_SECCOMP_ARG)), true),
];

/// `LinuxIntelRdt`.
pub const LINUX_INTEL_RDT: &[Field] = &[
    f("closID", Ty::Str, true),
    f("l3CacheSchema", Ty::Str, true),
    f("memBwSchema", Ty::Str, true),
    f("enableCMT", Ty::Bool, true),
    f("enableMBM", Ty::Bool, true),
];

/// `ZOS`.
pub const ZOS: &[Field] = &[f("devices", Ty::Slice(&Ty::Struct(ZOS_DEVICE)), true)];

/// `ZOSDevice`.
pub const ZOS_DEVICE: &[Field] = &[
    f("path", Ty::Str, false),
    f("type", Ty::Str, false),
    f("major", Ty::Int, false),
    f("minor", Ty::Int, false),
    f("fileMode", Ty::Ptr(&Ty::Uint), true),
    f("uid", Ty::Ptr(&Ty::Uint), true),
    f("gid", Ty::Ptr(&Ty::Uint), true),
];
