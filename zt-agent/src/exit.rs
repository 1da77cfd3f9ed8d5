//! Exit codes, following sysexits(3).
pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
pub const DATAERR: u8 = 65;
pub const NOUSER: u8 = 67;
pub const UNAVAILABLE: u8 = 69;
pub const SOFTWARE: u8 = 70;
pub const OSERR: u8 = 71;
pub const NOPERM: u8 = 77;
pub const CONFIG: u8 = 78;

/// An error and its causes on one line: "outer: cause: root cause".
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}
