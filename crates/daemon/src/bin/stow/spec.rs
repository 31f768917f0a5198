//! The OCI runtime spec `containers create` records: containerd 1.6's default Unix spec
//! (what `ctr containers create` starts from), and the edits ctr makes to it from the image
//! config and its flags. Kept as JSON: the spec is only recorded, never run, and a spec read
//! from `--config` passes through with fields this module does not know.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Map, Value};

use crate::spec_fields::{self, Ty};

/// The runtime-spec version containerd 1.6 stamps on the specs it generates.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// The PATH a process gets when the image sets no environment at all.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a default container keeps (bounding, effective and permitted alike).
const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The largest uid or gid accepted as a number (runc's limit, which containerd follows).
const MAX_ID: i64 = i32::MAX as i64;

/// containerd's default Unix spec for container `id` in namespace `ns`, with its default
/// device rules added (ctr's `WithDefaultSpec` then `WithDefaultUnixDevices`).
pub fn default_unix(ns: &str, id: &str) -> Value {
    let mount = |dest: &str, kind: &str, src: &str, opts: &[&str]| json!({"destination": dest, "type": kind, "source": src, "options": opts});
    let nosuid_tmpfs = ["nosuid", "strictatime", "mode=755", "size=65536k"];
    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    // null, random, full, tty, zero, urandom, console, every pts, ptmx.
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(8)),
        (1, Some(7)),
        (5, Some(0)),
        (1, Some(5)),
        (1, Some(9)),
        (5, Some(1)),
        (136, None),
        (5, Some(2)),
    ] {
        let mut d = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
        if let Some(m) = minor {
            d["minor"] = json!(m);
        }
        devices.push(d);
    }
    let namespaces: Vec<Value> = ["pid", "ipc", "uts", "mount", "network"]
        .iter()
        .map(|t| json!({"type": t}))
        .collect();
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS,
                "effective": DEFAULT_CAPS,
                "permitted": DEFAULT_CAPS,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "mounts": [
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount("/dev", "tmpfs", "tmpfs", &nosuid_tmpfs),
            mount("/dev/pts", "devpts", "devpts",
                  &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
            mount("/dev/shm", "tmpfs", "shm",
                  &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
            mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
            mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount("/run", "tmpfs", "tmpfs", &nosuid_tmpfs),
        ],
        "linux": {
            "resources": {"devices": devices},
            "cgroupsPath": format!("/{ns}/{id}"),
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// `overrides` applied to the environment `defaults`: `K=v` replaces the entry of key K
/// or is appended, a bare `K` removes it.
pub fn replace_or_append_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<Option<String>> = defaults.iter().cloned().map(Some).collect();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (i, e) in defaults.iter().enumerate() {
        at.insert(key(e), i);
    }
    for o in overrides {
        match (o.contains('='), at.get(&key(o))) {
            (false, Some(&i)) => out[i] = None,
            (false, None) => {}
            (true, Some(&i)) => out[i] = Some(o.clone()),
            (true, None) => out.push(Some(o.clone())),
        }
    }
    // An entry that was set to empty text is dropped too, as containerd does.
    out.into_iter()
        .flatten()
        .filter(|e| !e.is_empty())
        .collect()
}

/// The process object, created if the spec has none.
fn process(spec: &mut Value) -> &mut Map<String, Value> {
    object_at(spec, "process")
}

/// The object under `key`, created (or replacing a non-object) if missing.
fn object_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    object_in(as_object(v), key)
}

/// The object under `key` of map `m`, created (or replacing a non-object) if missing.
fn object_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    as_object(m.entry(key.to_string()).or_insert_with(|| json!({})))
}

/// `v` as an object, made an empty one first if it is anything else.
fn as_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("v was made an object just above"),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The process environment.
pub fn env(spec: &Value) -> Vec<String> {
    strings(spec.pointer("/process/env"))
}

/// `vars` set in the process environment (ctr's `--env`).
pub fn with_env(spec: &mut Value, vars: &[String]) {
    if vars.is_empty() {
        return;
    }
    let e = replace_or_append_env(&env(spec), vars);
    process(spec).insert("env".into(), json!(e));
}

/// Reads a file of the container's root filesystem by its absolute path; `None` when it
/// does not exist.
pub type ReadRootFile<'a> = dyn FnMut(&str) -> Result<Option<String>> + 'a;

/// The image config's runtime defaults applied as ctr applies them: its environment under
/// the spec's, entrypoint and command, working directory, and user (looked up in the image's
/// /etc/passwd and /etc/group through `read`).
pub fn with_image_config(
    spec: &mut Value,
    config: Option<&Value>,
    read: &mut ReadRootFile<'_>,
) -> Result<()> {
    let field = |k: &str| config.and_then(|c| c.get(k));
    let mut defaults = strings(field("Env"));
    if defaults.is_empty() {
        defaults.push(DEFAULT_PATH.into());
    }
    let e = replace_or_append_env(&defaults, &env(spec));
    let mut args = strings(field("Entrypoint"));
    args.extend(strings(field("Cmd")));
    let cwd = field("WorkingDir")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("/")
        .to_string();
    let p = process(spec);
    p.insert("env".into(), json!(e));
    p.insert("args".into(), json!(args));
    p.insert("cwd".into(), json!(cwd));
    let user = field("User").and_then(Value::as_str).unwrap_or("");
    let (uid, gid) = if user.is_empty() {
        current_ids(spec)
    } else {
        resolve_user(user, read)?
    };
    // Supplementary groups are looked up even when the image names no user (then "root").
    let who = if user.is_empty() {
        "root".to_string()
    } else {
        uid.to_string()
    };
    let extra = supplementary_gids(&who, read)?;
    set_user(spec, uid, gid, extra);
    Ok(())
}

fn current_ids(spec: &Value) -> (u32, u32) {
    let id = |k: &str| {
        spec.pointer(&format!("/process/user/{k}"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    (id("uid"), id("gid"))
}

/// Sets the process user; the primary gid always leads the additional gids unless among them.
fn set_user(spec: &mut Value, uid: u32, gid: u32, mut extra: Vec<u32>) {
    if !extra.contains(&gid) {
        extra.insert(0, gid);
    }
    let u = object_in(process(spec), "user");
    u.insert("uid".into(), json!(uid));
    u.insert("gid".into(), json!(gid));
    u.insert("additionalGids".into(), json!(extra));
}

/// A number in the range runc accepts, as Go's `strconv.Atoi` reads it.
fn id_number(s: &str) -> Option<u32> {
    let n: i64 = s.parse().ok()?;
    (0..=MAX_ID)
        .contains(&n)
        .then(|| u32::try_from(n).ok())
        .flatten()
}

/// One /etc/passwd entry: name, uid, gid (unparsable numbers read as 0, as runc reads them).
struct PasswdEntry {
    name: String,
    uid: i64,
    gid: i64,
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            PasswdEntry {
                name: f.first().unwrap_or(&"").to_string(),
                uid: num(2),
                gid: num(3),
            }
        })
        .collect()
}

/// One /etc/group entry: name, gid, members.
struct GroupEntry {
    name: String,
    gid: i64,
    members: Vec<String>,
}

fn group_entries(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            GroupEntry {
                name: f.first().unwrap_or(&"").to_string(),
                gid: f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                members: f
                    .get(3)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn as_id(n: i64) -> u32 {
    // Go converts with uint32(int): the low 32 bits.
    n as u32
}

/// The uid and gid an image's `User` (`user`, `uid`, `user:group`, `uid:gid`, ...) names.
fn resolve_user(user: &str, read: &mut ReadRootFile<'_>) -> Result<(u32, u32)> {
    let parts: Vec<&str> = user.split(':').collect();
    match parts.as_slice() {
        [one] => match id_number(one) {
            Some(uid) => {
                // A uid missing from /etc/passwd (or no /etc/passwd) runs with gid 0.
                let found = read("/etc/passwd")?.and_then(|t| {
                    passwd_entries(&t)
                        .into_iter()
                        .find(|e| e.uid == i64::from(uid))
                });
                Ok(found.map_or((uid, 0), |e| (as_id(e.uid), as_id(e.gid))))
            }
            None => {
                let text = read("/etc/passwd")?
                    .with_context(|| format!("image user {one:?}: the image has no /etc/passwd"))?;
                let e = passwd_entries(&text)
                    .into_iter()
                    .find(|e| e.name == *one)
                    .with_context(|| format!("image user {one:?}: no such user in /etc/passwd"))?;
                Ok((as_id(e.uid), as_id(e.gid)))
            }
        },
        [u, g] => {
            let (mut uid, mut gid) = (id_number(u).unwrap_or(0), id_number(g).unwrap_or(0));
            if id_number(u).is_none() {
                let text = read("/etc/passwd")?.with_context(|| {
                    format!("image user {user:?}: the image has no /etc/passwd")
                })?;
                uid = passwd_entries(&text)
                    .into_iter()
                    .find(|e| e.name == *u)
                    .map(|e| as_id(e.uid))
                    .with_context(|| format!("image user {user:?}: no user {u} in /etc/passwd"))?;
            }
            if id_number(g).is_none() {
                let text = read("/etc/group")?
                    .with_context(|| format!("image user {user:?}: the image has no /etc/group"))?;
                gid = group_entries(&text)
                    .into_iter()
                    .find(|e| e.name == *g)
                    .map(|e| as_id(e.gid))
                    .with_context(|| format!("image user {user:?}: no group {g} in /etc/group"))?;
            }
            Ok((uid, gid))
        }
        _ => bail!("image user {user:?} is not user, uid, user:group or uid:gid"),
    }
}

/// The gids of the groups that list `who` (a uid, looked up in /etc/passwd, or a user name)
/// as a member, other than the group of the user's own name.
fn supplementary_gids(who: &str, read: &mut ReadRootFile<'_>) -> Result<Vec<u32>> {
    let name = match who.parse::<i64>() {
        Ok(uid) => {
            let found = read("/etc/passwd")?
                .and_then(|t| passwd_entries(&t).into_iter().find(|e| e.uid == uid));
            match found {
                Some(e) => e.name,
                None => return Ok(Vec::new()),
            }
        }
        Err(_) => who.to_string(),
    };
    let Some(text) = read("/etc/group")? else {
        return Ok(Vec::new());
    };
    Ok(group_entries(&text)
        .into_iter()
        .filter(|g| g.name != name && g.members.contains(&name))
        .map(|g| as_id(g.gid))
        .collect())
}

/// `path` (absolute, inside the container) resolved under `root` with every symlink
/// followed inside `root`, as containerd resolves /etc/passwd in an image: a link can never
/// lead out of the image's tree.
pub fn scoped_path(root: &Path, path: &str) -> Result<PathBuf> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        let candidate: PathBuf =
            root.join(at.iter().chain(std::iter::once(&c)).collect::<PathBuf>());
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    bail!("too many symlinks resolving {path} in the image");
                }
                let target = std::fs::read_link(&candidate)
                    .with_context(|| format!("reading link {}", candidate.display()))?;
                if target.is_absolute() {
                    at.clear();
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(s) => todo.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => at.push(c),
        }
    }
    Ok(root.join(at.iter().collect::<PathBuf>()))
}

/// Reads `path` of the tree at `root` (symlinks scoped to it); `None` if it does not exist.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<String>> {
    let p = scoped_path(root, path)?;
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path} of the image")),
    }
}

/// A `--mount` value (`type=bind,src=/a,dst=/b,options=rbind:ro`) as a spec mount.
pub fn parse_mount(m: &str) -> Result<Value> {
    let mut out = Map::new();
    for field in m.split(',') {
        let (k, v) = field
            .split_once('=')
            .with_context(|| format!("mount {m:?}: {field:?} is not key=value"))?;
        let (key, val) = match k {
            "type" => ("type", json!(v)),
            "source" | "src" => ("source", json!(v)),
            "destination" | "dst" => ("destination", json!(v)),
            "options" => ("options", json!(v.split(':').collect::<Vec<_>>())),
            _ => bail!("mount {m:?}: option {k:?} is not one of type, src, dst, options"),
        };
        out.insert(key.into(), val);
    }
    Ok(Value::Object(out))
}

/// Appends mounts to the spec.
pub fn with_mounts(spec: &mut Value, mounts: Vec<Value>) {
    if mounts.is_empty() {
        return;
    }
    let slot = as_object(spec).entry("mounts").or_insert_with(|| json!([]));
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Some(a) = slot.as_array_mut() {
        a.extend(mounts);
    }
}

/// Sets (or replaces) annotations. An empty set is left out, as containerd's encoding
/// leaves out an empty map.
pub fn with_annotations(spec: &mut Value, annotations: &HashMap<String, String>) {
    let a = object_at(spec, "annotations");
    for (k, v) in annotations {
        a.insert(k.clone(), json!(v));
    }
    if a.is_empty() {
        as_object(spec).remove("annotations");
    }
}

/// The capability lists a flag edits, created if missing.
fn caps_lists(spec: &mut Value) -> Vec<&mut Value> {
    let caps = object_in(process(spec), "capabilities");
    let mut out = Vec::new();
    for (k, v) in caps.iter_mut() {
        if ["bounding", "effective", "permitted"].contains(&k.as_str()) {
            if !v.is_array() {
                *v = json!([]);
            }
            out.push(v);
        }
    }
    out
}

/// Adds capabilities to the bounding, effective and permitted sets.
pub fn with_added_caps(spec: &mut Value, caps: &[String]) {
    {
        let c = object_in(process(spec), "capabilities");
        for k in ["bounding", "effective", "permitted"] {
            c.entry(k).or_insert_with(|| json!([]));
        }
    }
    for list in caps_lists(spec) {
        if let Some(a) = list.as_array_mut() {
            for c in caps {
                if !a.iter().any(|x| x.as_str() == Some(c)) {
                    a.push(json!(c));
                }
            }
        }
    }
}

/// Removes capabilities from the bounding, effective and permitted sets.
pub fn with_dropped_caps(spec: &mut Value, caps: &[String]) {
    for list in caps_lists(spec) {
        if let Some(a) = list.as_array_mut() {
            a.retain(|x| !caps.iter().any(|c| x.as_str() == Some(c)));
        }
    }
}

/// Joins (or replaces) a Linux namespace of the given type.
pub fn with_namespace(spec: &mut Value, kind: &str, path: &str) {
    let linux = object_at(spec, "linux");
    let list = linux.entry("namespaces").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let ns = json!({"type": kind, "path": path});
    if let Some(a) = list.as_array_mut() {
        match a.iter_mut().find(|n| n["type"] == kind) {
            Some(n) => *n = ns,
            None => a.push(ns),
        }
    }
}

/// Leaves the Linux namespace of the given type (the container shares the host's).
pub fn without_namespace(spec: &mut Value, kind: &str) {
    if let Some(a) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        if let Some(i) = a.iter().position(|n| n["type"] == kind) {
            a.remove(i);
        }
    }
}

/// The device nodes at `path` (one node, or every node below a directory but those
/// containerd leaves out) as spec devices, read from the host.
pub fn host_devices(path: &Path) -> Result<Vec<Value>> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("--device {}: cannot stat it", path.display()))?;
    if !meta.is_dir() {
        return device(path)?
            .map(|d| vec![d])
            .with_context(|| format!("--device {}: not a device node", path.display()));
    }
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", path.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for e in entries {
        let name = e.file_name();
        let kind = e
            .file_type()
            .with_context(|| format!("reading {}", e.path().display()))?;
        if kind.is_dir() {
            let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
            if !skip.iter().any(|s| name == *s) {
                out.extend(host_devices(&e.path())?);
            }
        } else if name != "console" && !kind.is_fifo() {
            match device(&e.path()) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(err) if is_not_found(&err) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(out)
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
}

/// One device node as a spec device; `None` for anything else (a link included).
fn device(path: &Path) -> Result<Option<Value>> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(path)?;
    let mode = m.mode();
    let kind = match mode & libc::S_IFMT {
        libc::S_IFBLK => "b",
        libc::S_IFCHR => "c",
        libc::S_IFIFO => "p",
        _ => return Ok(None),
    };
    let rdev = m.rdev();
    Ok(Some(json!({
        "path": path.to_string_lossy(),
        "type": kind,
        "major": libc::major(rdev),
        "minor": libc::minor(rdev),
        "fileMode": mode & !libc::S_IFMT,
        "uid": m.uid(),
        "gid": m.gid(),
    })))
}

/// Adds devices to the spec, each with a cgroup rule allowing `access`.
pub fn with_devices(spec: &mut Value, devices: Vec<Value>, access: &str) {
    let rules: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({"allow": true, "type": d["type"], "major": d["major"], "minor": d["minor"],
                   "access": access})
        })
        .collect();
    let push = |slot: &mut Value, items: Vec<Value>| {
        if !slot.is_array() {
            *slot = json!([]);
        }
        if let Some(a) = slot.as_array_mut() {
            a.extend(items);
        }
    };
    push(
        object_at(spec, "linux")
            .entry("devices")
            .or_insert_with(|| json!([])),
        devices,
    );
    push(
        resources(spec)
            .entry("devices")
            .or_insert_with(|| json!([])),
        rules,
    );
}

/// A spec read from a file as containerd's Go types read it and write it back: fields it
/// does not know are dropped, empty optional ones left out, absent required ones written
/// as their zero value (ctr records a `--config` spec that way). A value of the wrong kind
/// is an error, as it is for ctr.
pub fn go_normalized(v: &Value) -> Result<Value> {
    normalized(&Ty::Struct(spec_fields::SPEC), Some(v), "spec")
}

/// A seccomp profile (`linux.seccomp`) as containerd's types read it.
pub fn seccomp_normalized(v: &Value) -> Result<Value> {
    normalized(
        &Ty::Struct(spec_fields::LINUX_SECCOMP),
        Some(v),
        "seccomp profile",
    )
}

fn normalized(ty: &Ty, v: Option<&Value>, at: &str) -> Result<Value> {
    let v = v.filter(|v| !v.is_null());
    let wrong = |want: &str| {
        anyhow::anyhow!(
            "{at}: expected {want}, found {}",
            v.map_or_else(String::new, Value::to_string)
        )
    };
    Ok(match ty {
        Ty::Str => match v {
            None => json!(""),
            Some(Value::String(s)) => json!(s),
            Some(_) => return Err(wrong("a string")),
        },
        Ty::Bool => match v {
            None => json!(false),
            Some(Value::Bool(b)) => json!(b),
            Some(_) => return Err(wrong("true or false")),
        },
        Ty::Int => match v {
            None => json!(0),
            Some(n) if n.is_i64() => n.clone(),
            Some(_) => return Err(wrong("an integer")),
        },
        Ty::Uint => match v {
            None => json!(0),
            Some(n) if n.is_u64() => n.clone(),
            Some(_) => return Err(wrong("a non-negative integer")),
        },
        Ty::Any => v.cloned().unwrap_or(Value::Null),
        Ty::Ptr(inner) => match v {
            None => Value::Null,
            Some(x) => normalized(inner, Some(x), at)?,
        },
        Ty::Slice(inner) => match v {
            None => Value::Null,
            Some(Value::Array(a)) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| normalized(inner, Some(x), &format!("{at}[{i}]")))
                    .collect::<Result<_>>()?,
            ),
            Some(_) => return Err(wrong("an array")),
        },
        Ty::Map(inner) => match v {
            None => Value::Null,
            Some(Value::Object(m)) => Value::Object(
                m.iter()
                    .map(|(k, x)| {
                        Ok((k.clone(), normalized(inner, Some(x), &format!("{at}.{k}"))?))
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => return Err(wrong("an object")),
        },
        Ty::Struct(fields) => {
            let input = match v {
                None => None,
                Some(Value::Object(m)) => Some(m),
                Some(_) => return Err(wrong("an object")),
            };
            let mut out = Map::new();
            for f in fields.iter() {
                // Go matches a key to a field exactly or, failing that, ignoring case.
                let given = input.and_then(|m| {
                    m.get(f.name).or_else(|| {
                        m.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(f.name))
                            .map(|(_, x)| x)
                    })
                });
                let x = normalized(&f.ty, given, &format!("{at}.{}", f.name))?;
                if !(f.omitempty && is_empty(&f.ty, &x)) {
                    out.insert(f.name.to_string(), x);
                }
            }
            Value::Object(out)
        }
    })
}

/// Whether Go's encoder counts a value of kind `ty` as empty (a struct never is).
fn is_empty(ty: &Ty, v: &Value) -> bool {
    match (ty, v) {
        (Ty::Struct(_), _) => false,
        (_, Value::Null) => true,
        (Ty::Ptr(_) | Ty::Any, _) => false,
        (_, Value::Bool(b)) => !b,
        (_, Value::Number(n)) => n.as_f64() == Some(0.0),
        (_, Value::String(s)) => s.is_empty(),
        (_, Value::Array(a)) => a.is_empty(),
        (_, Value::Object(m)) => m.is_empty(),
    }
}

/// Capability names by number, as containerd 1.6 knows them (through Linux 5.9).
const KNOWN_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The names of the effective capabilities in a /proc/<pid>/status text (unknown bits
/// left out).
pub fn effective_caps(status: &str) -> Result<Vec<String>> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?
        .trim();
    let bits = u64::from_str_radix(hex, 16)
        .with_context(|| format!("CapEff {hex:?} is not a hexadecimal bitmap"))?;
    Ok(KNOWN_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| (bits >> i) & 1 == 1)
        .map(|(_, n)| n.to_string())
        .collect())
}

/// ctr's `--privileged`: the caller's effective capabilities, no masked or read-only paths,
/// writable sysfs and cgroupfs, no SELinux label, AppArmor profile or seccomp, every device
/// allowed and the host's devices given.
pub fn with_privileged(spec: &mut Value, caps: Vec<String>, host: Vec<Value>) {
    {
        let c = object_in(process(spec), "capabilities");
        for k in ["bounding", "effective", "permitted"] {
            if caps.is_empty() {
                c.remove(k);
            } else {
                c.insert(k.into(), json!(caps));
            }
        }
        let p = process(spec);
        p.remove("selinuxLabel");
        p.remove("apparmorProfile");
    }
    let linux = object_at(spec, "linux");
    for k in ["maskedPaths", "readonlyPaths", "seccomp"] {
        linux.remove(k);
    }
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts {
            if m["type"] == "sysfs" || m["type"] == "cgroup" {
                if let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) {
                    for o in opts.iter_mut().filter(|o| *o == "ro") {
                        *o = json!("rw");
                    }
                }
            }
        }
    }
    resources(spec).insert("devices".into(), json!([{"allow": true, "access": "rwm"}]));
    let devices = object_at(spec, "linux")
        .entry("devices")
        .or_insert_with(|| json!([]));
    if !devices.is_array() {
        *devices = json!([]);
    }
    if let Some(a) = devices.as_array_mut() {
        a.extend(host);
    }
}

/// The resources object of the Linux section, created if missing.
pub fn resources(spec: &mut Value) -> &mut Map<String, Value> {
    object_in(object_at(spec, "linux"), "resources")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn env_overrides_replace_append_and_unset() {
        let d = s(&["PATH=/bin", "A=1", "B=2"]);
        assert_eq!(
            replace_or_append_env(&d, &s(&["A=9", "C=3", "B"])),
            s(&["PATH=/bin", "A=9", "C=3"])
        );
        assert_eq!(replace_or_append_env(&d, &s(&["Z"])), d);
    }

    #[test]
    fn default_spec_has_containerds_shape() {
        let v = default_unix("ns1", "c9");
        assert_eq!(v["linux"]["cgroupsPath"], "/ns1/c9");
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let dev = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(dev.len(), 10);
        assert_eq!(
            dev[8],
            json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})
        );
        assert_eq!(v["mounts"].as_array().unwrap().len(), 7);
        assert!(v["process"].get("env").is_none());
    }

    fn files<'a>(
        passwd: Option<&'a str>,
        group: Option<&'a str>,
    ) -> impl FnMut(&str) -> Result<Option<String>> + 'a {
        move |p| {
            Ok(match p {
                "/etc/passwd" => passwd.map(str::to_string),
                "/etc/group" => group.map(str::to_string),
                _ => None,
            })
        }
    }

    #[test]
    fn image_config_sets_process_and_user() {
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "# c\nroot:x:0:\napp:x:1001:app\nextra:x:2000:root,app\naudio:x:29:app\n";
        let cfg = json!({"Env": ["PATH=/x", "A=1"], "Entrypoint": ["/e"], "Cmd": ["c"],
                         "WorkingDir": "/srv", "User": "app"});
        let mut spec = default_unix("default", "c");
        with_env(&mut spec, &s(&["A=2", "B=3"]));
        with_image_config(&mut spec, Some(&cfg), &mut files(Some(passwd), Some(group))).unwrap();
        let p = &spec["process"];
        assert_eq!(p["env"], json!(["PATH=/x", "A=2", "B=3"]));
        assert_eq!(p["args"], json!(["/e", "c"]));
        assert_eq!(p["cwd"], "/srv");
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1001, "additionalGids": [1001, 2000, 29]})
        );

        // No user: root's supplementary groups, the primary gid first.
        let mut spec = default_unix("default", "c");
        with_image_config(&mut spec, None, &mut files(Some(passwd), Some(group))).unwrap();
        assert_eq!(spec["process"]["user"]["additionalGids"], json!([0, 2000]));
        assert_eq!(spec["process"]["env"], json!([DEFAULT_PATH]));
        assert_eq!(spec["process"]["cwd"], "/");

        // Numeric forms; an unknown uid runs with gid 0.
        let mut r = files(Some(passwd), Some(group));
        assert_eq!(resolve_user("4242", &mut r).unwrap(), (4242, 0));
        assert_eq!(resolve_user("1000", &mut r).unwrap(), (1000, 1001));
        assert_eq!(resolve_user("7:8", &mut r).unwrap(), (7, 8));
        assert_eq!(resolve_user("app:audio", &mut r).unwrap(), (1000, 29));
        assert!(resolve_user("nobody", &mut r).is_err());
        assert!(resolve_user("a:b:c", &mut r).is_err());
        assert!(resolve_user("app", &mut files(None, None)).is_err());
        assert_eq!(resolve_user("5", &mut files(None, None)).unwrap(), (5, 0));
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let d = std::env::temp_dir().join(format!("stow-spec-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("real")).unwrap();
        std::fs::write(d.join("real/passwd"), "app:x:1:1::/:/bin/sh\n").unwrap();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::os::unix::fs::symlink("/real/passwd", d.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/shadow", d.join("etc/group")).unwrap();
        assert_eq!(
            read_in_root(&d, "/etc/passwd").unwrap().as_deref(),
            Some("app:x:1:1::/:/bin/sh\n")
        );
        assert_eq!(scoped_path(&d, "/etc/group").unwrap(), d.join("etc/shadow"));
        assert_eq!(read_in_root(&d, "/etc/group").unwrap(), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn effective_caps_read_by_bit() {
        let st = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000200021\n";
        assert_eq!(
            effective_caps(st).unwrap(),
            ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"]
        );
        assert!(effective_caps("CapEff:\tzz\n").is_err());
        assert!(effective_caps("").is_err());
    }

    #[test]
    fn a_spec_file_reads_as_containerds_types_read_it() {
        let given = json!({
            "ociVersion": "1.0.2", "x-top": {"a": 1},
            "process": {"terminal": false, "Args": ["sh"], "user": {"uid": 0, "umask": 18},
                        "oomScoreAdj": 0, "x": 1},
            "root": {"path": "rootfs", "readonly": false}, "hostname": "", "mounts": [],
            "linux": {"namespaces": [{"type": "pid", "path": ""}],
                      "resources": {"cpu": {"shares": 0}}}
        });
        assert_eq!(
            go_normalized(&given).unwrap(),
            json!({
                "ociVersion": "1.0.2",
                "process": {"user": {"uid": 0, "gid": 0, "umask": 18}, "args": ["sh"],
                            "cwd": "", "oomScoreAdj": 0},
                "root": {"path": "rootfs"},
                "linux": {"namespaces": [{"type": "pid"}], "resources": {"cpu": {"shares": 0}}}
            })
        );
        assert_eq!(
            go_normalized(&json!({})).unwrap(),
            json!({"ociVersion": ""})
        );
        for bad in [
            json!({"process": {"args": "sh"}}),
            json!({"process": {"user": {"uid": -1}}}),
            json!({"linux": {"resources": {"memory": {"limit": 1.5}}}}),
            json!([]),
        ] {
            assert!(go_normalized(&bad).is_err(), "{bad}");
        }
        // containerd's own default spec passes through unchanged.
        let d = default_unix("default", "c");
        assert_eq!(go_normalized(&d).unwrap(), d);
    }

    #[test]
    fn mount_flags_parse_as_ctr_reads_them() {
        assert_eq!(
            parse_mount("type=bind,src=/a,dst=/b,options=rbind:ro").unwrap(),
            json!({"type": "bind", "source": "/a", "destination": "/b", "options": ["rbind", "ro"]})
        );
        assert!(parse_mount("type=bind,bogus=1").is_err());
        assert!(parse_mount("type").is_err());
    }
}
