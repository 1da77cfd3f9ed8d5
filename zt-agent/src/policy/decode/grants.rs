//! `spec.grants` and the `when` windows of rules: durations, days, hours, time zones.

use super::{Decoder, index, join};
use crate::policy::model::{ALL_DAYS, DAY_NAMES, GrantSettings, MAX_GRANT_CEILING_SECS, Window};
use crate::policy::values::{check_timezone, format_duration, parse_duration, parse_hours};
use crate::policy::yaml::Node;

impl Decoder<'_> {
    /// `spec.grants`: `maxDuration`, the ceiling of every grant (default 1h, at most 7d).
    pub(super) fn grants(&mut self, node: &Node) -> Option<GrantSettings> {
        let f = self.fields(node, "spec.grants", &["maxDuration"])?;
        let mut g = GrantSettings::default();
        if let Some(n) = f.get("maxDuration") {
            const FIELD: &str = "spec.grants.maxDuration";
            let secs = self.duration(n, FIELD)?;
            if secs > MAX_GRANT_CEILING_SECS {
                self.at(
                    n,
                    FIELD,
                    format!(
                        "maxDuration {} is over the limit of 7d",
                        format_duration(secs)
                    ),
                );
                return None;
            }
            g.max_duration = secs;
        }
        Some(g)
    }

    pub(super) fn duration(&mut self, n: &Node, field: &str) -> Option<u64> {
        let s = self.string(n, field)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.at(n, field, msg);
                None
            }
        }
    }

    /// `egress[].when`: a non-empty list of `{days, hours, timezone}`.
    pub(super) fn windows(&mut self, node: &Node, field: &str) -> Option<Vec<Window>> {
        let items = self.list(node, field)?;
        if items.is_empty() {
            self.at(
                node,
                field,
                "`when` must not be empty; omit it for a rule that is always open",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index(field, i);
            match self.window(item, &path) {
                Some(w) => out.push(w),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn window(&mut self, node: &Node, path: &str) -> Option<Window> {
        let f = self.fields(node, path, &["days", "hours", "timezone"])?;
        let mut ok = true;
        let mut days = ALL_DAYS;
        if let Some(n) = f.get("days") {
            let field = join(path, "days");
            match self.list(n, &field) {
                Some([]) => {
                    self.at(n, &field, "`days` must not be empty; omit it for every day");
                    ok = false;
                }
                Some(items) => {
                    days = 0;
                    for (i, item) in items.iter().enumerate() {
                        let f = index(&field, i);
                        let Some(name) = self.string(item, &f) else {
                            ok = false;
                            continue;
                        };
                        match DAY_NAMES.iter().position(|d| *d == name) {
                            Some(bit) if days & (1 << bit) != 0 => {
                                self.at(item, &f, format!("`{name}` is listed twice"));
                                ok = false;
                            }
                            Some(bit) => days |= 1 << bit,
                            None => {
                                self.at(
                                    item,
                                    &f,
                                    format!(
                                        "invalid day `{name}`, expected one of: {}",
                                        DAY_NAMES.join(", ")
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                None => ok = false,
            }
        }
        let (mut start, mut end) = (0, 86_400);
        if let Some(n) = f.get("hours") {
            let field = join(path, "hours");
            match self.string(n, &field) {
                Some(h) => match parse_hours(&h) {
                    Ok((a, b)) => (start, end) = (a, b),
                    Err(msg) => {
                        self.at(n, &field, msg);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        let mut timezone = "UTC".to_owned();
        if let Some(n) = f.get("timezone") {
            let field = join(path, "timezone");
            match self.string(n, &field) {
                Some(tz) => match check_timezone(&tz) {
                    Ok(()) => timezone = tz,
                    Err(msg) => {
                        self.at(n, &field, msg);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then(|| Window {
            days,
            start,
            end,
            timezone,
            location: self.location(node),
        })
    }
}
