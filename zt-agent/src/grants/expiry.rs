//! Time: what a restarted daemon keeps of the store, and the sweep every second.
//! The kernel already ignores what lapsed (every allowance carries its deadline);
//! the sweep records it, frees the entries, and opens and closes windows.

use std::time::Duration;

use super::manager::Manager;
use super::model::{GrantState, RequestState, Scope, TaskScope, boot_id};
use super::view::Source;
use super::window;
use crate::events::GrantAction;
use crate::policy::{self, DynamicKind};

impl Manager {
    /// After a start: grants recorded under another boot are judged by their wall
    /// clock end (gone if it passed, and task-scoped ones are gone with their task);
    /// pending requests get their clocks back.
    pub(super) fn restore(&mut self) {
        let boot = boot_id();
        let now_ms = Self::ms_now();
        let now_ns = Self::now_boot();
        for i in 0..self.grants.len() {
            let g = &self.grants[i];
            if g.state != GrantState::Active || g.boot_id == boot {
                continue;
            }
            if g.expires_ms <= now_ms {
                self.end_grant(i, GrantState::Expired, "expired", None);
            } else if g.scope != Scope::Identity {
                self.end_grant(i, GrantState::Revoked, "task_ended", None);
            } else {
                let left = u64::try_from(g.expires_ms - now_ms).unwrap_or(0);
                let g = &mut self.grants[i];
                g.expires_boot_ns = now_ns.saturating_add(left.saturating_mul(1_000_000));
                g.boot_id.clone_from(&boot);
                let g = g.clone();
                self.save_grant(&g);
            }
        }
        for r in self
            .requests
            .iter()
            .filter(|r| r.state == RequestState::Pending)
        {
            let left = u64::try_from(r.expires_ms.saturating_sub(now_ms)).unwrap_or(0);
            self.waiting.entry(r.id.clone()).or_default().deadline_ns =
                now_ns.saturating_add(left.saturating_mul(1_000_000));
        }
        let active = self
            .grants
            .iter()
            .filter(|g| g.state == GrantState::Active)
            .count();
        if active > 0 {
            tracing::info!(active, "grants restored from the store");
        }
    }

    /// End grant `i`: record why, announce it, drop what lookups installed under it.
    pub(super) fn end_grant(
        &mut self,
        i: usize,
        state: GrantState,
        why: &'static str,
        who: Option<&str>,
    ) {
        let g = &mut self.grants[i];
        g.state = state;
        g.ended = Some(why.to_owned());
        if state == GrantState::Revoked {
            // A grant revoked early ends now; keep the listing honest.
            g.expires_ms = g.expires_ms.min(Self::ms_now());
        }
        let g = g.clone();
        self.save_grant(&g);
        let action = if state == GrantState::Expired {
            GrantAction::Expired
        } else {
            GrantAction::Revoked
        };
        self.log(
            action.as_str(),
            Some(&g.id),
            g.request.as_deref(),
            who.unwrap_or("zt-agent"),
            why,
        );
        let mut e = self.event_of(action, why);
        e.who = who.map(str::to_owned);
        e.grant = Some(g.clone());
        self.announce(e);
        self.learned
            .retain(|l| l.source != Source::Grant(g.id.clone()));
        tracing::info!(grant = %g.id, identity = %g.identity, why, "grant ended");
    }

    /// Whether the task a grant is scoped to is gone.
    fn task_ended(&self, scope: &Scope, identity: &str) -> bool {
        match scope {
            Scope::Identity => false,
            Scope::Run { run_id, cgroup_id } => {
                let dir = self
                    .settings
                    .cgroup_root
                    .join(policy::LAUNCH_CGROUP_ROOT.trim_start_matches('/'))
                    .join(identity)
                    .join(run_id);
                crate::sys::cgroup::cgroup_id(&dir).ok() != Some(*cgroup_id)
            }
            Scope::Pid { pid, start_ticks } => {
                TaskScope::read(*pid).start_ticks != Some(*start_ticks)
            }
        }
    }

    /// Every second: lapsed grants, ended tasks, timed-out requests, windows, and the
    /// store's old records.
    pub(super) fn sweep(&mut self) {
        let now_ns = Self::now_boot();
        for i in 0..self.grants.len() {
            let g = &self.grants[i];
            if g.state != GrantState::Active {
                continue;
            }
            if g.expires_boot_ns <= now_ns {
                self.end_grant(i, GrantState::Expired, "expired", None);
            } else if self.task_ended(&g.scope.clone(), &g.identity.clone()) {
                self.end_grant(i, GrantState::Revoked, "task_ended", None);
            }
        }
        let timed_out: Vec<usize> = self
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.state == RequestState::Pending
                    && self
                        .waiting
                        .get(&r.id)
                        .is_none_or(|w| w.deadline_ns <= now_ns)
            })
            .map(|(i, _)| i)
            .collect();
        for i in timed_out {
            let id = self.requests[i].id.clone();
            self.decide(
                i,
                RequestState::TimedOut,
                "zt-agent",
                "no decision in time",
                None,
            );
            self.wake(&id, false);
        }
        self.learned.retain(|l| l.deadline_ns > now_ns);
        self.windows_now(now_ns);
        let keep = i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX);
        let before = Self::ms_now().saturating_sub(keep);
        let old = |ms: i64| ms < before;
        self.grants
            .retain(|g| g.state == GrantState::Active || !old(g.expires_ms));
        self.requests
            .retain(|r| r.state == RequestState::Pending || !old(r.created_ms));
        if let Err(e) = self.store.clean(before) {
            tracing::warn!(error = %e, "cleaning the grant store");
        }
    }

    /// Open windows get the end of their current opening as their deadline; closed
    /// ones none. A window's deadline stays as given while its end does not move.
    pub(super) fn windows_now(&mut self, now_ns: u64) {
        let now = jiff::Timestamp::now();
        let mut next = std::collections::BTreeMap::new();
        for ident in self.policy.by_name.values() {
            for rule in &ident.dynamic {
                let DynamicKind::Window(ws) = &rule.kind else {
                    continue;
                };
                let Some(until) = window::open_until(ws, now) else {
                    continue;
                };
                let key = (ident.id, rule.index);
                let deadline = match self.windows.get(&key) {
                    Some((end, d)) if *end == until => *d,
                    _ => {
                        let left = until.duration_since(now);
                        let left = Duration::try_from(left).unwrap_or_default();
                        now_ns.saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
                    }
                };
                next.insert(key, (until, deadline));
            }
        }
        // Addresses a closed window's names installed close with it.
        self.learned.retain(|l| match &l.source {
            Source::Window(rule) => next.contains_key(&(l.identity, *rule)),
            Source::Grant(_) => true,
        });
        self.windows = next;
    }
}
