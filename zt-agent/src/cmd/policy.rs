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
