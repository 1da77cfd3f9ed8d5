//! Exit codes, following sysexits(3); the tests check the same constants.
pub use zt_agent_host::exit::*;

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
