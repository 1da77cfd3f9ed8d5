//! Exit codes of the agent's commands, following sysexits(3), and the shell's conventions
//! that `zt-agent run` passes on for its workload.

pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
pub const DATAERR: u8 = 65;
/// An input file did not exist or was not readable.
pub const NOINPUT: u8 = 66;
pub const NOUSER: u8 = 67;
pub const UNAVAILABLE: u8 = 69;
pub const SOFTWARE: u8 = 70;
pub const OSERR: u8 = 71;
/// A file the command must create (the daemon's store, its control socket) cannot be.
pub const CANTCREAT: u8 = 73;
pub const NOPERM: u8 = 77;
pub const CONFIG: u8 = 78;
/// The command exists but could not be executed.
pub const CANNOT_EXEC: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// A workload killed by signal `sig` exits as a shell reports it: 128 + the signal.
#[must_use]
pub fn signalled(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_as_the_shell_reports_them() {
        assert_eq!(signalled(libc::SIGTERM), 143);
        assert_eq!(signalled(libc::SIGKILL), 137);
    }
}
