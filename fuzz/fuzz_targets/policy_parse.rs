//! The policy pipeline on arbitrary text: YAML parse, decode, validate, then compile
//! what loads. Nothing may panic, and every error names the file and a place inside the
//! text (`zt_agent::policy::check_any_text`, which a unit test also runs over a fixed
//! stream of mutated policies).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = zt_agent::policy::check_any_text(&text);
});
