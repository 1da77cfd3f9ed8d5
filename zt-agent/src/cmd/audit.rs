//! `zt-agent audit verify FILE...`: the chain over the files, in order.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;

use crate::events::chain::{self, Verdict};
use crate::exit;

pub fn verify(files: &[PathBuf]) -> u8 {
    // The files as one stream, remembering where each starts, to name the line.
    let mut text = Vec::new();
    let mut starts = Vec::new();
    for f in files {
        let mut body = Vec::new();
        if let Err(e) = std::fs::File::open(f).and_then(|mut h| h.read_to_end(&mut body)) {
            eprintln!("zt-agent audit verify: {}: {e}", f.display());
            return exit::NOINPUT;
        }
        if body.ends_with(b"\n") {
            body.pop();
        }
        let before = BufReader::new(text.as_slice()).lines().count();
        starts.push((before, f));
        if !text.is_empty() {
            text.push(b'\n');
        }
        text.extend_from_slice(&body);
    }
    match chain::verify(text.as_slice()) {
        Ok(Verdict::Intact {
            lines,
            first_seq,
            last_seq,
        }) => {
            println!("intact: {lines} lines, seq {first_seq} to {last_seq}");
            if first_seq > 1 {
                println!(
                    "note: the first line continues a chain from an earlier file (seq {}); give that file first to check the link",
                    first_seq - 1
                );
            }
            exit::OK
        }
        Ok(Verdict::Broken { line, why }) => {
            let (at, file) = starts
                .iter()
                .rev()
                .find(|(s, _)| (*s as u64) < line)
                .map_or((0, files.first()), |(s, f)| (*s, Some(*f)));
            let shown = file.map(|f| f.display().to_string()).unwrap_or_default();
            println!("broken: {shown}:{}: {why}", line - at as u64);
            exit::DATAERR
        }
        Err(e) => {
            eprintln!("zt-agent audit verify: {e}");
            exit::NOINPUT
        }
    }
}
