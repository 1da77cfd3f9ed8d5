//! What /proc says about a process. Every reader returns `None` once the process is gone.

use std::str::FromStr;

/// The binary a process runs, as its /proc/PID/exe link names it.
#[must_use]
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
}

/// The command name of a process (/proc/PID/comm).
#[must_use]
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The real uid of a process.
#[must_use]
pub fn uid(pid: u32) -> Option<u32> {
    Status::of(pid)?.first("Uid")
}

/// One reading of /proc/PID/status: `Name:\tvalue` lines.
pub struct Status(String);

impl Status {
    #[must_use]
    pub fn of(pid: u32) -> Option<Self> {
        Self::read(&format!("/proc/{pid}/status"))
    }

    /// This process's own status.
    #[must_use]
    pub fn of_self() -> Option<Self> {
        Self::read("/proc/self/status")
    }

    fn read(path: &str) -> Option<Self> {
        std::fs::read_to_string(path).ok().map(Self)
    }

    /// The text after `name:` (`Uid`, `VmRSS`, `NSpid`...).
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
    }

    /// The first value of a field, parsed: the real uid of `Uid`, the KiB of `VmRSS`.
    #[must_use]
    pub fn first<T: FromStr>(&self, name: &str) -> Option<T> {
        self.field(name)?.split_whitespace().next()?.parse().ok()
    }
}

/// A thread group that still has a live thread: when it started, in clock ticks since
/// boot (/proc/PID/stat field 22). `None` when it is gone, or a zombie whose threads
/// have all exited (what is left only waits for its parent to reap it). A leader that
/// exited while other threads run is a zombie too, but its thread group lives on.
#[must_use]
pub fn live_start_ticks(pid: u32) -> Option<u64> {
    let (state, start) = state_and_start(pid)?;
    if state == "Z" || state == "X" {
        let threads: u64 = Status::of(pid)?.first("Threads")?;
        if threads <= 1 {
            return None;
        }
    }
    Some(start)
}

/// When a process started, in clock ticks since boot (/proc/PID/stat field 22),
/// whatever its state.
#[must_use]
pub fn start_ticks(pid: u32) -> Option<u64> {
    state_and_start(pid).map(|(_, start)| start)
}

/// Field 3 (the state) and field 22 (starttime) of /proc/PID/stat.
fn state_and_start(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let after: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // `after` starts at field 3.
    Some(((*after.first()?).to_owned(), after.get(19)?.parse().ok()?))
}

/// Clock ticks per second, the unit of /proc's start times.
#[must_use]
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = Status(
            "Name:\tzt-probe\nUid:\t65534\t65534\t65534\t65534\nGid:\t100\t100\t100\t100\nVmRSS:\t  2048 kB\nNSpid:\t42\t1\n"
                .to_owned(),
        );
        assert_eq!(s.first::<u32>("Uid"), Some(65534));
        assert_eq!(s.first::<u32>("Gid"), Some(100));
        assert_eq!(s.first::<u64>("VmRSS"), Some(2048));
        assert_eq!(
            s.field("NSpid").map(|v| v.split_whitespace().count()),
            Some(2)
        );
        assert_eq!(s.field("Name"), Some("\tzt-probe"));
        // A field name is matched whole, not as a prefix of a longer one.
        assert_eq!(s.first::<u32>("Ui"), None);
    }

    #[test]
    fn start_ticks_parse_past_odd_comm() {
        assert!(start_ticks(std::process::id()).is_some());
        assert!(start_ticks(u32::MAX).is_none());
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert!(exe(me).is_some_and(|e| !e.is_empty()));
        assert!(comm(me).is_some_and(|c| !c.is_empty()));
        // SAFETY: getuid has no preconditions.
        assert_eq!(uid(me), Some(unsafe { libc::getuid() }));
        assert!(
            Status::of_self()
                .and_then(|s| s.field("NSpid").map(str::to_owned))
                .is_some()
        );
    }
}
