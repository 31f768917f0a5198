//! containerd's built-in seccomp profile, the one `ctr containers create --seccomp` records
//! when no profile file is given. ctr builds it in the client from the spec being made (its
//! bounding capabilities), the architecture ctr was built for and the running kernel, so stow
//! does the same here, on the same facts, to record the same profile.

use serde_json::{json, Value};

/// Syscalls every container may make, whatever its capabilities.
const ALWAYS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` personas that stay allowed (each one an exact match on the first
/// argument): `PER_LINUX`, `PER_LINUX32` (0x8), `UNAME26` (0x20000), the last two together,
/// and the query (0xffffffff) that changes nothing.
const PERSONAS: &[u64] = &[0x0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls allowed when the bounding set holds a capability; the rules come in the order
/// of the spec's bounding set, one for each capability found here.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The capability that lifts the namespace restrictions on `clone` and `clone3`.
const ADMIN: &str = "CAP_SYS_ADMIN";

/// The namespace flags a container without CAP_SYS_ADMIN may not pass to `clone`:
/// CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID and
/// CLONE_NEWNET.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `ptrace` is allowed to everyone from this kernel (major, minor) on: before it, ptrace
/// could be used to get around seccomp.
const PTRACE_SAFE_SINCE: (u64, u64) = (4, 8);

/// What the profile takes from the architecture ctr was built for.
#[derive(Debug)]
pub struct Arch {
    /// Go's name of the architecture (`GOARCH`).
    pub go: &'static str,
    /// The seccomp architectures the filter covers (none: the runtime's native one only).
    pub scmp: &'static [&'static str],
    /// Syscalls allowed on this architecture only.
    pub extra: &'static [&'static str],
    /// Which argument of `clone` holds the flags (the second one on s390).
    pub clone_flags_arg: u64,
    /// ENOSYS, what `clone3` answers without CAP_SYS_ADMIN (so that libcs fall back to
    /// `clone`, which the filter can inspect).
    pub enosys: u64,
}

const ARM_EXTRA: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// The architectures containerd has something particular for, by Go's name. Its builds for
/// 32-bit x86, 32-bit ARM, ppc64le and little-endian mips64 get no architecture list.
pub const ARCHES: &[Arch] = &[
    Arch {
        go: "amd64",
        scmp: &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        extra: &["arch_prctl", "modify_ldt"],
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "arm64",
        scmp: &["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
        extra: ARM_EXTRA,
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "arm",
        scmp: &[],
        extra: ARM_EXTRA,
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "386",
        scmp: &[],
        extra: &["modify_ldt"],
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "s390x",
        scmp: &["SCMP_ARCH_S390", "SCMP_ARCH_S390X"],
        extra: &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        clone_flags_arg: 1,
        enosys: 38,
    },
    Arch {
        go: "riscv64",
        scmp: &["SCMP_ARCH_RISCV64"],
        extra: &["riscv_flush_icache"],
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "ppc64le",
        scmp: &[],
        extra: &["sync_file_range2", "swapcontext"],
        clone_flags_arg: 0,
        enosys: 38,
    },
    Arch {
        go: "mips64",
        scmp: &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32"],
        extra: &[],
        clone_flags_arg: 0,
        enosys: 89,
    },
    Arch {
        go: "mips64le",
        scmp: &[],
        extra: &[],
        clone_flags_arg: 0,
        enosys: 89,
    },
];

/// An architecture containerd has nothing particular for.
const OTHER_ARCH: Arch = Arch {
    go: "",
    scmp: &[],
    extra: &[],
    clone_flags_arg: 0,
    enosys: 38,
};

/// Go's name of the architecture this stow was built for (ctr's, on the same machine).
fn go_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if little => "mips64le",
        a => a,
    }
}

/// The entry for the architecture this stow was built for.
pub fn host_arch() -> &'static Arch {
    let go = go_arch();
    ARCHES.iter().find(|a| a.go == go).unwrap_or(&OTHER_ARCH)
}

/// The running kernel's (major, minor) as ctr reads them from uname's release: the leading
/// `N.M` (`6.1.0-18-amd64` is 6.1); `None` when the release does not start that way, and then,
/// as for ctr, the kernel-dependent part is left out.
pub fn running_kernel() -> Option<(u64, u64)> {
    // SAFETY: utsname is plain bytes, valid zeroed; uname only writes into the struct given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let release: Vec<u8> = u
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    kernel_version(&String::from_utf8_lossy(&release))
}

/// The leading `N.M` of a kernel release string.
fn kernel_version(release: &str) -> Option<(u64, u64)> {
    let number = |s: &str| -> Option<(u64, usize)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        s[..n].parse().ok().map(|v| (v, n))
    };
    let (major, n) = number(release)?;
    let rest = release[n..].strip_prefix('.')?;
    let (minor, _) = number(rest)?;
    Some((major, minor))
}

/// The default profile for `spec` (its bounding capabilities decide the optional parts), on
/// the host's architecture and kernel.
pub fn default_profile(spec: &Value) -> Value {
    profile(spec, host_arch(), running_kernel())
}

/// The default profile for `spec` on architecture `arch` and kernel `kernel`, in
/// containerd's order: the common allow list, the personalities, ptrace on kernels where it
/// is safe, the architecture's own syscalls, those of each bounding capability, and without
/// CAP_SYS_ADMIN the namespace-free `clone` and an ENOSYS `clone3`.
pub fn profile(spec: &Value, arch: &Arch, kernel: Option<(u64, u64)>) -> Value {
    let allow = |names: &[&str]| json!({"names": names, "action": "SCMP_ACT_ALLOW"});
    let mut rules = vec![allow(ALWAYS)];
    for p in PERSONAS {
        rules.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    if kernel.is_some_and(|k| k >= PTRACE_SAFE_SINCE) {
        rules.push(allow(&["ptrace"]));
    }
    if !arch.extra.is_empty() {
        rules.push(allow(arch.extra));
    }
    let bounding: Vec<&str> = spec
        .pointer("/process/capabilities/bounding")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for cap in &bounding {
        if let Some((_, names)) = BY_CAPABILITY.iter().find(|(c, _)| c == cap) {
            rules.push(allow(names));
        }
    }
    if !bounding.contains(&ADMIN) {
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": arch.clone_flags_arg,
                                    "value": CLONE_NAMESPACE_FLAGS,
                                    "op": "SCMP_CMP_MASKED_EQ"}]}));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": arch.enosys}));
    }
    let mut p = json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules});
    if !arch.scmp.is_empty() {
        p["architectures"] = json!(arch.scmp);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(go: &str) -> &'static Arch {
        ARCHES.iter().find(|a| a.go == go).unwrap()
    }

    fn with_bounding(caps: &[&str]) -> Value {
        json!({"process": {"capabilities": {"bounding": caps}}})
    }

    fn names(rule: &Value) -> Vec<&str> {
        rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect()
    }

    #[test]
    fn kernel_release_is_read_as_its_leading_major_and_minor() {
        for (release, want) in [
            ("6.1.0-18-amd64", Some((6, 1))),
            ("3.10.0-862.2.3.el7.x86_64", Some((3, 10))),
            ("3.12foobar", Some((3, 12))),
            ("4.8", Some((4, 8))),
            ("", None),
            ("3", None),
            ("3.", None),
            ("3.a", None),
            ("-3.8", None),
            ("a.1", None),
        ] {
            assert_eq!(kernel_version(release), want, "{release:?}");
        }
        assert!(running_kernel().is_some());
    }

    #[test]
    fn unprivileged_profile_on_amd64() {
        let p = profile(
            &with_bounding(&["CAP_CHOWN", "CAP_KILL"]),
            arch("amd64"),
            Some((6, 1)),
        );
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let rules = p["syscalls"].as_array().unwrap();
        // common, 5 personas, ptrace, arch, clone, clone3.
        assert_eq!(rules.len(), 10);
        let common = names(&rules[0]);
        assert_eq!(common.len(), 349);
        for n in ["read", "execve", "io_uring_setup", "_llseek", "writev"] {
            assert!(common.contains(&n), "{n}");
        }
        for n in ["mount", "clone", "ptrace", "reboot", "bpf"] {
            assert!(!common.contains(&n), "{n}");
        }
        assert!(rules[0].get("args").is_none());
        assert_eq!(
            rules[5],
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]})
        );
        assert_eq!(names(&rules[6]), ["ptrace"]);
        assert_eq!(names(&rules[7]), ["arch_prctl", "modify_ldt"]);
        assert_eq!(
            rules[8],
            json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 2_114_060_288u64, "op": "SCMP_CMP_MASKED_EQ"}]})
        );
        assert_eq!(
            rules[9],
            json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
        );
    }

    #[test]
    fn capabilities_add_rules_in_the_specs_order() {
        let caps = [
            "CAP_SYS_TIME",
            "CAP_CHOWN",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
        ];
        let p = profile(&with_bounding(&caps), arch("amd64"), Some((4, 7)));
        let rules = p["syscalls"].as_array().unwrap();
        // common, 5 personas, arch (no ptrace before 4.8), one per known capability, and
        // neither clone rule with CAP_SYS_ADMIN.
        assert_eq!(rules.len(), 10);
        assert_eq!(names(&rules[6]), ["arch_prctl", "modify_ldt"]);
        assert_eq!(names(&rules[7])[0], "settimeofday");
        assert!(names(&rules[8]).contains(&"mount") && names(&rules[8]).contains(&"clone3"));
        assert_eq!(names(&rules[9]).last(), Some(&"ptrace"));
        assert!(rules.iter().all(|r| r["action"] == "SCMP_ACT_ALLOW"));
    }

    #[test]
    fn architecture_parts() {
        let none = json!({});
        let arm = profile(&none, arch("arm64"), None);
        assert_eq!(
            arm["architectures"],
            json!(["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"])
        );
        let rules = arm["syscalls"].as_array().unwrap();
        assert_eq!(names(&rules[6])[0], "arm_fadvise64_64");
        let s390 = profile(&none, arch("s390x"), None);
        let clone = &s390["syscalls"].as_array().unwrap()[7];
        assert_eq!(clone["args"][0]["index"], 1);
        let ppc = profile(&none, arch("ppc64le"), None);
        assert!(ppc.get("architectures").is_none());
        let mips = profile(&none, arch("mips64"), None);
        assert_eq!(
            mips["syscalls"].as_array().unwrap().last().unwrap()["errnoRet"],
            89
        );
        // Nothing particular: no architecture list, no architecture rule.
        let other = profile(&none, &OTHER_ARCH, None);
        assert!(other.get("architectures").is_none());
        assert_eq!(other["syscalls"].as_array().unwrap().len(), 8);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host_arch().go, "amd64");
        }
    }

    #[test]
    fn profile_is_already_in_containerds_shape() {
        let p = default_profile(&with_bounding(&["CAP_SYS_ADMIN", "CAP_BPF"]));
        assert_eq!(crate::spec::seccomp_normalized(&p).unwrap(), p);
    }
}
