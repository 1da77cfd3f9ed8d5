//! Time windows (`egress[].when`): whether a rule is open at an instant, until when,
//! and when it opens next, in the window's own time zone (daylight saving included).

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::policy::Window;

/// One opening of a window: from `start` to `end` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The instant `secs` after local midnight of `date` in `tz` (86,400 is the next
/// midnight). A local time that does not exist (skipped by a DST change) resolves
/// forward, one that occurs twice to its first occurrence.
fn at(date: Date, secs: u32, tz: &TimeZone) -> Option<Timestamp> {
    let (date, secs) = if secs >= 86_400 {
        (date.checked_add(Span::new().days(1)).ok()?, secs - 86_400)
    } else {
        (date, secs)
    };
    let h = i8::try_from(secs / 3600).ok()?;
    let m = i8::try_from(secs % 3600 / 60).ok()?;
    let s = i8::try_from(secs % 60).ok()?;
    date.at(h, m, s, 0)
        .to_zoned_datetime(tz.clone())
        .ok()
        .map(|z| z.timestamp())
}

/// The opening of `w` that starts on local date `date`, if `w` opens that weekday.
fn opening_on(w: &Window, date: Date, tz: &TimeZone) -> Option<Opening> {
    let day = date.weekday().to_monday_zero_offset();
    if w.days & (1 << day) == 0 {
        return None;
    }
    let start = at(date, w.start, tz)?;
    let end = if w.end > w.start {
        at(date, w.end, tz)?
    } else {
        at(date, w.end + 86_400, tz)?
    };
    (end > start).then_some(Opening { start, end })
}

fn zone(w: &Window) -> TimeZone {
    TimeZone::get(&w.timezone).unwrap_or(TimeZone::UTC)
}

/// The openings of `w` that start within a day before `now` to a week after it.
fn openings_around(w: &Window, now: Timestamp) -> Vec<Opening> {
    let tz = zone(w);
    let today = now.to_zoned_datetime(tz.clone()).date();
    (-1..=7)
        .filter_map(|d| today.checked_add(Span::new().days(d)).ok())
        .filter_map(|date| opening_on(w, date, &tz))
        .collect()
}

/// Whether any of `windows` is open at `now`, and until when: the end of the opening
/// `now` is in, extended by openings that start before it ends (of any of the
/// windows), so that back-to-back windows read as one.
#[must_use]
pub fn open_until(windows: &[Window], now: Timestamp) -> Option<Timestamp> {
    let all: Vec<Opening> = windows
        .iter()
        .flat_map(|w| openings_around(w, now))
        .collect();
    let mut end = all
        .iter()
        .filter(|o| o.start <= now && now < o.end)
        .map(|o| o.end)
        .max()?;
    // At most one pass per opening found: the extension is bounded.
    for _ in 0..all.len() {
        let next = all
            .iter()
            .filter(|o| o.start <= end && o.end > end)
            .map(|o| o.end)
            .max();
        match next {
            Some(e) => end = e,
            None => break,
        }
    }
    Some(end)
}

/// When the next opening after `now` starts (within a week), for `why`.
#[must_use]
pub fn next_opening(windows: &[Window], now: Timestamp) -> Option<Timestamp> {
    windows
        .iter()
        .flat_map(|w| openings_around(w, now))
        .map(|o| o.start)
        .filter(|s| *s > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ALL_DAYS, Location};

    fn w(days: u8, start: u32, end: u32, tz: &str) -> Window {
        Window {
            days,
            start,
            end,
            timezone: tz.to_owned(),
            location: Location::default(),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn office_hours_in_berlin() {
        // Mon-Fri 08:00-18:00 Europe/Berlin; 2026-12-01 is a Tuesday (UTC+1 in winter).
        let office = [w(0b1_1111, 8 * 3600, 18 * 3600, "Europe/Berlin")];
        assert_eq!(
            open_until(&office, ts("2026-12-01T09:00:00Z")),
            Some(ts("2026-12-01T17:00:00Z"))
        );
        assert_eq!(open_until(&office, ts("2026-12-01T06:59:59Z")), None);
        assert_eq!(open_until(&office, ts("2026-12-01T17:00:00Z")), None);
        // Saturday is closed; the next opening is Monday 07:00 UTC.
        assert_eq!(open_until(&office, ts("2026-12-05T10:00:00Z")), None);
        assert_eq!(
            next_opening(&office, ts("2026-12-05T10:00:00Z")),
            Some(ts("2026-12-07T07:00:00Z"))
        );
        // Summer time: UTC+2.
        assert_eq!(
            open_until(&office, ts("2026-07-01T06:30:00Z")),
            Some(ts("2026-07-01T16:00:00Z"))
        );
    }

    #[test]
    fn overnight_and_back_to_back() {
        // 22:00-06:00 UTC, opening every day: at 03:00 it is open since yesterday.
        let night = [w(ALL_DAYS, 22 * 3600, 6 * 3600, "UTC")];
        assert_eq!(
            open_until(&night, ts("2026-12-01T03:00:00Z")),
            Some(ts("2026-12-01T06:00:00Z"))
        );
        let day = [
            w(ALL_DAYS, 0, 12 * 3600, "UTC"),
            w(ALL_DAYS, 12 * 3600, 86_400, "UTC"),
        ];
        // Back-to-back windows read as one, and the whole days chain up to a bound.
        let until = open_until(&day, ts("2026-12-01T03:00:00Z")).expect("open");
        assert!(until >= ts("2026-12-02T00:00:00Z"), "{until}");
        // Seconds are honoured.
        let short = [w(ALL_DAYS, 3600, 3605, "UTC")];
        assert_eq!(
            open_until(&short, ts("2026-12-01T01:00:04Z")),
            Some(ts("2026-12-01T01:00:05Z"))
        );
    }
}
