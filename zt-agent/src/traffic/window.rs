//! A sliding window of bytes: what was sent in the last `per` seconds, kept in
//! `STEPS` buckets, so a window of any length costs the same memory.

use std::collections::VecDeque;

/// Buckets per window: the window slides in steps of `per / STEPS` (at least 1 s).
pub const STEPS: u64 = 120;

#[derive(Debug)]
pub struct Window {
    per: u64,
    step: u64,
    /// (bucket start, in seconds since the daemon started counting; bytes), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl Window {
    #[must_use]
    pub fn new(per: u64) -> Self {
        Self {
            per,
            step: (per / STEPS).max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Add `bytes` sent at second `now`.
    pub fn add(&mut self, now: u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let start = now - now % self.step;
        match self.buckets.back_mut() {
            Some((s, b)) if *s == start => *b += bytes,
            _ => self.buckets.push_back((start, bytes)),
        }
    }

    /// Bytes sent within the window that ends at `now`; older buckets are dropped.
    pub fn sum(&mut self, now: u64) -> u64 {
        while let Some((s, _)) = self.buckets.front() {
            if s + self.per <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
        self.buckets.iter().map(|(_, b)| b).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_leave_the_window_once_it_has_slid_past_them() {
        let mut w = Window::new(60);
        w.add(0, 100);
        w.add(30, 50);
        assert_eq!(w.sum(30), 150);
        assert_eq!(w.sum(59), 150);
        // The first bucket (second 0) is older than 60 s at second 60.
        assert_eq!(w.sum(60), 50);
        assert_eq!(w.sum(90), 0);
        assert!(w.is_empty());
    }

    #[test]
    fn long_windows_keep_few_buckets() {
        let mut w = Window::new(3600);
        for s in 0..3600 {
            w.add(s, 1);
        }
        assert_eq!(w.buckets.len(), STEPS as usize);
        assert_eq!(w.sum(3599), 3600);
        // 30 s later the buckets that started at 0 and 30 are gone.
        assert_eq!(w.sum(3630), 3540);
    }
}
