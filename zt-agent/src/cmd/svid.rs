//! `zt-agent svid IDENTITY [--json]`: the identity's latest SVIDs and the bundles.

use crate::cli::SvidArgs;
use crate::exit;
use crate::spiffe::svid::Issued;
use crate::state::State;

pub fn execute(args: &SvidArgs) -> u8 {
    if !zt_agent_host::is_root() {
        eprintln!("zt-agent svid: must run as root (the SVID record is root-only)");
        return exit::NOPERM;
    }
    let state = match State::read(&args.dirs.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zt-agent svid: {}", exit::chain(&e));
            return exit::UNAVAILABLE;
        }
    };
    let Some(ident) = state.identity(&args.identity) else {
        let known: Vec<&str> = state.identities.iter().map(|i| i.name.as_str()).collect();
        eprintln!(
            "zt-agent svid: unknown identity {:?}: the policy in force defines {}",
            args.identity,
            known.join(", ")
        );
        return exit::CONFIG;
    };
    let issued = match Issued::read(&args.dirs.state_dir) {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "zt-agent svid: {} (is the daemon serving the Workload API?)",
                exit::chain(&e)
            );
            return exit::UNAVAILABLE;
        }
    };
    let mine = issued
        .identities
        .get(&ident.name)
        .cloned()
        .unwrap_or_default();
    if args.json {
        let out = serde_json::json!({
            "identity": ident.name,
            "spiffe_id": ident.spiffe_id,
            "workload_api": state.workload_api,
            "x509_svid": mine.x509,
            "jwt_svid": mine.jwt,
            "x509_bundle": issued.x509_bundle,
            "jwt_bundle": issued.jwt_bundle,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return exit::OK;
    }
    let when = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    println!("identity:      {}", ident.name);
    println!("spiffe id:     {}", ident.spiffe_id);
    match &mine.x509 {
        Some(x) => {
            println!(
                "x509-svid:     serial {} valid {} .. {} (run {}, pid {})",
                x.serial,
                when(x.not_before),
                when(x.not_after),
                x.run_id,
                x.pid
            );
            print!("{}", x.certificate);
        }
        None => println!("x509-svid:     none issued since the daemon started"),
    }
    match &mine.jwt {
        Some(j) => println!(
            "jwt-svid:      kid {} audience {} issued {} expires {} (run {}, pid {})",
            j.kid,
            j.audience.join(","),
            when(j.iat),
            when(j.exp),
            j.run_id,
            j.pid
        ),
        None => println!("jwt-svid:      none issued since the daemon started"),
    }
    println!("x509 bundle:   {} certificate(s)", issued.x509_bundle.len());
    for c in &issued.x509_bundle {
        print!("{c}");
    }
    println!(
        "jwt bundle:    {}",
        serde_json::to_string(&issued.jwt_bundle).unwrap_or_default()
    );
    exit::OK
}
