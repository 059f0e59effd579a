//! An engine's identity in the shared database, and whether the engine behind an identity
//! still runs, so a run whose engine died (SIGKILL, a crash, a power cut) is marked
//! abandoned at the next start instead of staying `running` forever.
//!
//! The ID is `engine-<pid>-<start>-<boot>-<random>@<host>`: the process's start time in
//! clock ticks since boot (`/proc/<pid>/stat` field 22) and the first 8 hex digits of the
//! kernel's boot ID. The pair (pid, start) names one process of one boot; a pid reused by
//! another process, or a reboot, shows as a different start or boot. Only IDs of this form
//! from this host are ever judged; any other ID (a host-chosen `EngineOptions::engine_id`,
//! an older version's `engine-<pid>-<random>`, another machine's) is [`Liveness::Unknown`]
//! and its runs are left alone.

/// Whether the engine that wrote an ID still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Its process is gone (or the pid now belongs to another process, or the machine
    /// rebooted since).
    Dead,
    /// Not decidable from here; treated as alive.
    Unknown,
}

/// This process's identity: a fresh ID for one engine.
pub fn new_engine_id() -> String {
    let pid = std::process::id();
    let start = process_start_ticks(pid).unwrap_or(0);
    format!(
        "engine-{pid}-{start}-{}-{:08x}@{}",
        boot_id().unwrap_or_else(|| "0".into()),
        rand::random::<u32>(),
        host_name()
    )
}

/// Whether the engine behind `id` (made by [`new_engine_id`]) still runs.
pub fn liveness(id: &str) -> Liveness {
    let Some(parsed) = Parsed::of(id) else {
        return Liveness::Unknown;
    };
    if parsed.host != host_name() || parsed.start == 0 {
        return Liveness::Unknown;
    }
    let Some(boot) = boot_id() else {
        return Liveness::Unknown;
    };
    if parsed.boot != boot {
        return Liveness::Dead;
    }
    match process_start_ticks(parsed.pid) {
        Some(start) if start == parsed.start => Liveness::Alive,
        Some(_) => Liveness::Dead,
        None if std::path::Path::new("/proc/self/stat").exists() => Liveness::Dead,
        None => Liveness::Unknown,
    }
}

struct Parsed<'a> {
    pid: u32,
    start: u64,
    boot: &'a str,
    host: &'a str,
}

impl<'a> Parsed<'a> {
    fn of(id: &'a str) -> Option<Self> {
        let (left, host) = id.rsplit_once('@')?;
        let mut parts = left.split('-');
        if parts.next()? != "engine" {
            return None;
        }
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let boot = parts.next()?;
        let _random = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            pid,
            start,
            boot,
            host,
        })
    }
}

/// A process's start time in clock ticks since boot, `None` when it does not exist (or
/// there is no `/proc`).
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // Field 3, the state: a zombie (or dead) process has ended; only its parent has not
    // collected it yet.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    // Start time is field 22, the 19th after the state.
    fields.nth(18)?.parse().ok()
}

/// The first 8 hex digits of the kernel's boot ID.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    (hex.len() == 8).then_some(hex)
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // when the name fits, and the last byte is kept 0 for when it does not.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    // '@' separates the host in an ID; keep the name parseable whatever it holds.
    String::from_utf8_lossy(&buf[..len]).replace('@', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let id = new_engine_id();
        assert_eq!(liveness(&id), Liveness::Alive, "{id}");
    }

    #[test]
    fn an_ended_process_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_ticks(pid);
        child.wait().unwrap();
        let id = format!(
            "engine-{pid}-{}-{}-00000000@{}",
            start.unwrap_or(1),
            boot_id().unwrap(),
            host_name()
        );
        assert_eq!(liveness(&id), Liveness::Dead, "{id}");
    }

    #[test]
    fn a_reused_pid_or_another_boot_is_dead() {
        let me = std::process::id();
        let start = process_start_ticks(me).unwrap();
        let boot = boot_id().unwrap();
        let host = host_name();
        let reused = format!("engine-{me}-{}-{boot}-00000000@{host}", start + 1);
        assert_eq!(liveness(&reused), Liveness::Dead);
        let rebooted = format!("engine-{me}-{start}-ffffffff-00000000@{host}");
        if boot != "ffffffff" {
            assert_eq!(liveness(&rebooted), Liveness::Dead);
        }
    }

    #[test]
    fn other_ids_are_never_judged() {
        let me = std::process::id();
        for id in [
            "engine-1-deadbeef".to_string(),
            "my-host-engine".to_string(),
            format!("engine-999999999-5-abcdef01-00000000@another-host-{me}"),
            String::new(),
        ] {
            assert_eq!(liveness(&id), Liveness::Unknown, "{id}");
        }
    }
}
