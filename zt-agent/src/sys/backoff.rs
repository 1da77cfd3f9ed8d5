//! The pause after a failed accept or receive (out of descriptors, say): 10 ms,
//! doubling up to 1 s, and back to 10 ms after a success, so that a lasting error never
//! spins and a passing one costs little. Every socket the daemon serves uses it.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(10);
const LONGEST: Duration = Duration::from_secs(1);

pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(FIRST)
    }
}

impl Backoff {
    /// The last call worked.
    pub fn reset(&mut self) {
        self.0 = FIRST;
    }

    /// The pause to wait now; the next is twice as long, up to 1 s.
    pub fn pause(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(LONGEST);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_a_second_and_starts_over() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..9).map(|_| b.pause().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(10));
    }
}
