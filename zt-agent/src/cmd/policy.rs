//! `zt-agent policy check DIR`: what the daemon would do with a policy directory on
//! this host, without loading anything.

use std::collections::BTreeMap;
use std::path::Path;

use crate::identity::resolve::HostFiles;
use crate::{exit, plan, policy};

pub fn check(dir: &Path) -> u8 {
    let p = match policy::load_dir(dir, policy::Trust::Any) {
        Ok(p) => p,
        Err(errs) => {
            eprint!("{errs}");
            return exit::CONFIG;
        }
    };
    // A draft may live anywhere; say what the daemon would refuse to read.
    for problem in policy::trust_problems(dir) {
        eprintln!("warning: the daemon would refuse this: {problem}");
    }
    // Resolve the files too: a missing binary or a digest that does not match this
    // host is worth knowing before the daemon loads it.
    let mut files = HostFiles::default();
    let _ = files.refresh_mounts();
    match plan::build(&p, &BTreeMap::new(), &mut files) {
        Ok(plan) => {
            for n in &plan.exec.notes {
                eprintln!(
                    "warning: {}: {} `{}`: {}",
                    n.location, n.field, n.path, n.message
                );
            }
            println!(
                "{}: {} identities, policy sha256 {}",
                dir.display(),
                plan.compiled.identities.len(),
                plan.sha256()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::CONFIG
        }
    }
}

/// `zt-agent policy suggest IDENTITY`: the identity's policy file with rules for what
/// the observation store saw it do outside its policy.
pub fn suggest(a: &crate::cli::SuggestArgs) -> u8 {
    use crate::observe::suggest::{Take, egress_rules, exec_files, rule_lines, when};
    let p = match policy::load_dir(&a.policy, policy::Trust::Any) {
        Ok(p) => p,
        Err(errs) => {
            eprint!("{errs}");
            return exit::CONFIG;
        }
    };
    let Some(ident) = p.identities.iter().find(|i| i.name == a.identity) else {
        eprintln!(
            "zt-agent: no identity `{}` in {}",
            a.identity,
            a.policy.display()
        );
        return exit::USAGE;
    };
    let file = Path::new(&ident.location.file);
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        a.policy.join(file.file_name().unwrap_or_default())
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("zt-agent: {}: {e}", file.display());
            return exit::NOINPUT;
        }
    };
    let store = match crate::observe::Store::open(&a.dirs.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zt-agent: {e}");
            return exit::NOINPUT;
        }
    };
    let since_ms = a.since.map_or(0, |d| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let ms = std::time::Duration::from(d).as_millis();
        i64::try_from(now - i128::try_from(ms).unwrap_or(i128::MAX)).unwrap_or(0)
    });
    let (flows, execs) = match (
        store.flows(&a.identity, since_ms),
        store.execs(&a.identity, since_ms),
    ) {
        (Ok(f), Ok(e)) => (f, e),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("zt-agent: {e}");
            return exit::SOFTWARE;
        }
    };
    let take = Take { denied: a.denied };
    let rules: Vec<Vec<String>> = egress_rules(&flows, take).iter().map(rule_lines).collect();
    // Files are added only to an allowlist there is: without one exec is not restricted.
    let exec: Vec<(String, String)> = match &ident.exec_allow {
        Some(allow) => exec_files(&execs, take)
            .into_iter()
            .filter(|(f, ..)| !allow.iter().any(|e| e.path == *f))
            .map(|(f, n, first, last)| {
                let why = format!(
                    "learned: {n} execs, first {}, last {}",
                    when(first),
                    when(last)
                );
                (f, why)
            })
            .collect(),
        None => Vec::new(),
    };
    let edit = policy::edit::Edit {
        identity: &a.identity,
        egress: &rules,
        exec: &exec,
        enforce: true,
    };
    let shown = file.display().to_string();
    let new = match policy::edit::apply(&shown, &text, &edit) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("zt-agent: {e}");
            return exit::CONFIG;
        }
    };
    eprintln!(
        "{}: {} flows and {} execs observed; {} rules and {} exec entries added. Rules already in the policy are kept: allowed connects are not observed, so none is called unused.",
        a.identity,
        flows.len(),
        execs.len(),
        rules.len(),
        exec.len()
    );
    let name = file
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    match a.format {
        crate::cli::SuggestFormat::Yaml => print!("{new}"),
        crate::cli::SuggestFormat::Diff => print!(
            "{}",
            similar::TextDiff::from_lines(&text, &new)
                .unified_diff()
                .header(&format!("a/{name}"), &format!("b/{name}"))
        ),
    }
    exit::OK
}
