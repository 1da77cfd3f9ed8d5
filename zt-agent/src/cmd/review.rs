//! `zt-agent review [IDENTITY]`: each identity's rules, what it did and the grants given
//! to it, from the policy, the observation store and the grant store.

use crate::observe::review::{self, GrantRecords, Review};
use crate::{cli::ReviewArgs, exit, policy};

pub fn execute(a: &ReviewArgs) -> u8 {
    let p = match policy::load_dir(&a.policy, policy::Trust::Any) {
        Ok(p) => p,
        Err(errs) => {
            eprint!("{errs}");
            return exit::CONFIG;
        }
    };
    if let Some(name) = &a.identity
        && !p.identities.iter().any(|i| &i.name == name)
    {
        eprintln!("zt-agent: no identity `{name}` in {}", a.policy.display());
        return exit::USAGE;
    }
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("zt-agent: {e}");
        exit::NOINPUT
    };
    let store = match crate::observe::Store::open(&a.dirs.state_dir) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let records = match crate::grants::store::Store::open(&a.dirs.state_dir).and_then(|g| {
        let grants = g.grants()?;
        let requests = g.requests()?;
        let decisions = g.decisions()?;
        // A decision names a grant or a request; either names the identity.
        let of = |d: &crate::grants::store::Decision| {
            d.grant
                .as_ref()
                .and_then(|id| {
                    grants
                        .iter()
                        .find(|x| &x.id == id)
                        .map(|x| x.identity.clone())
                })
                .or_else(|| {
                    d.request.as_ref().and_then(|id| {
                        requests
                            .iter()
                            .find(|x| &x.id == id)
                            .map(|x| x.identity.clone())
                    })
                })
        };
        let decisions = decisions
            .into_iter()
            .filter_map(|d| of(&d).map(|i| (i, d)))
            .collect();
        Ok(GrantRecords { grants, decisions })
    }) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let period =
        i128::try_from(std::time::Duration::from(a.since).as_millis()).unwrap_or(i128::MAX);
    let since_ms = i64::try_from(now_ms.saturating_sub(period)).unwrap_or(0);
    let mut out = Review {
        since: crate::observe::suggest::when(since_ms),
        identities: Vec::new(),
    };
    for ident in p
        .identities
        .iter()
        .filter(|i| a.identity.as_ref().is_none_or(|n| &i.name == n))
    {
        match review::identity(ident, &store, &records, since_ms) {
            Ok(r) => out.identities.push(r),
            Err(e) => return fail(&e),
        }
    }
    if a.json {
        match serde_json::to_string_pretty(&out) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&e),
        }
    } else {
        print!("{}", review::markdown(&out));
    }
    exit::OK
}
