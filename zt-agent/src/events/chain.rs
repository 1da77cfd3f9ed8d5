//! The audit trail: every event line carries `seq` (1, 2, 3, ... across restarts) and
//! `chain`, the hex sha256 of the previous line's `chain`, a newline, and this line as
//! written without its `chain` field. A deleted, reordered, inserted or edited line
//! breaks the chain at that line, which `zt-agent audit verify` names.
//!
//! The sink is the only writer. It continues the chain from the last line of its file
//! at start-up, or from the head it keeps in the state dir (for stdout, or a file that
//! was moved away), so restarts and rotations do not break it.

use std::io::{BufRead, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The `chain` before the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What every line ends with: `,"chain":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = 10 + 64 + 2;
const HEAD_FILE: &str = "events.head";

/// The chain's head: the last line's `seq` and `chain`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub chain: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: 0,
            chain: GENESIS.to_owned(),
        }
    }
}

/// `chain` of a line whose text without the field is `body`, after `prev`.
#[must_use]
pub fn link(prev: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// The line `body` (a JSON object without `chain`) becomes, after `prev`.
#[must_use]
pub fn seal(prev: &str, body: &[u8]) -> (Vec<u8>, String) {
    let chain = link(prev, body);
    let mut line = body.to_vec();
    if line.last() == Some(&b'}') {
        line.pop();
    }
    line.extend_from_slice(b",\"chain\":\"");
    line.extend_from_slice(chain.as_bytes());
    line.extend_from_slice(b"\"}");
    (line, chain)
}

/// A line taken apart: its text without `chain`, and its `chain`.
fn unseal(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return None;
    }
    let cut = line.len() - SUFFIX_LEN;
    if &line[cut..cut + 10] != b",\"chain\":\"" {
        return None;
    }
    let chain = std::str::from_utf8(&line[cut + 10..line.len() - 2]).ok()?;
    if !chain.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut body = line[..cut].to_vec();
    body.push(b'}');
    Some((body, chain))
}

fn seq_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// The head of the chain in an event file: its last whole line, if it is a sealed one.
#[must_use]
pub fn head_of_file(path: &Path) -> Option<Head> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let text = tail.strip_suffix(b"\n")?;
    let last = text.rsplit(|b| *b == b'\n').next()?;
    let (body, chain) = unseal(last)?;
    Some(Head {
        seq: seq_of(&body)?,
        chain: chain.to_owned(),
    })
}

/// Where the head is kept in the state dir.
#[must_use]
pub fn head_path(state_dir: &Path) -> PathBuf {
    state_dir.join(HEAD_FILE)
}

#[must_use]
pub fn read_head(state_dir: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(head_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Keep the head in the state dir (written whole, then renamed into place).
pub fn write_head(state_dir: &Path, head: &Head) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = state_dir.join(format!("{HEAD_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(head).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, head_path(state_dir))
}

/// What `audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every line links to the one before. `first_seq` above 1 means the input starts
    /// in the middle of a chain (a rotated file): its first line is taken as given.
    Intact {
        lines: u64,
        first_seq: u64,
        last_seq: u64,
    },
    /// The first line (1-based) that breaks the chain, and how.
    Broken { line: u64, why: String },
}

/// Check the chain over `input`, line by line.
///
/// # Errors
/// Reading fails.
pub fn verify(input: impl BufRead) -> std::io::Result<Verdict> {
    let mut prev: Option<Head> = None;
    let mut first_seq = 0;
    let mut n = 0;
    for line in input.split(b'\n') {
        let line = line?;
        n += 1;
        let broken = |why: String| Ok(Verdict::Broken { line: n, why });
        let Some((body, chain)) = unseal(&line) else {
            return broken("not a sealed event line (no `chain` at its end)".into());
        };
        let Some(seq) = seq_of(&body) else {
            return broken("not an event with a `seq`".into());
        };
        let before = match &prev {
            Some(p) => {
                if seq != p.seq + 1 {
                    return broken(format!(
                        "seq {seq} follows seq {}: {} missing or out of order",
                        p.seq,
                        if seq > p.seq + 1 {
                            "lines are"
                        } else {
                            "a line is"
                        }
                    ));
                }
                p.chain.clone()
            }
            None => {
                first_seq = seq;
                if seq == 1 {
                    GENESIS.to_owned()
                } else {
                    // A file that continues an earlier one: its first line is the anchor.
                    prev = Some(Head {
                        seq,
                        chain: chain.to_owned(),
                    });
                    continue;
                }
            }
        };
        if link(&before, &body) != chain {
            return broken(format!(
                "seq {seq}: chain does not match (the line was edited, or the one before it was)"
            ));
        }
        prev = Some(Head {
            seq,
            chain: chain.to_owned(),
        });
    }
    Ok(Verdict::Intact {
        lines: n,
        first_seq,
        last_seq: prev.map_or(0, |p| p.seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u64) -> Vec<Vec<u8>> {
        let mut head = Head::default();
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"time\":\"t\",\"seq\":{seq},\"kind\":\"connect\"}}");
                let (line, chain) = seal(&head.chain, body.as_bytes());
                head = Head { seq, chain };
                line
            })
            .collect()
    }

    fn check(lines: &[Vec<u8>]) -> Verdict {
        let text = lines.join(&b'\n');
        verify(text.as_slice()).expect("read")
    }

    #[test]
    fn intact_removed_edited_reordered() {
        let lines = file(5);
        assert_eq!(
            check(&lines),
            Verdict::Intact {
                lines: 5,
                first_seq: 1,
                last_seq: 5
            }
        );
        let mut removed = lines.clone();
        removed.remove(2);
        assert!(matches!(check(&removed), Verdict::Broken { line: 3, .. }));
        let mut edited = lines.clone();
        edited[1] = String::from_utf8(edited[1].clone())
            .expect("utf8")
            .replace("connect", "sendmsg")
            .into_bytes();
        assert!(matches!(check(&edited), Verdict::Broken { line: 2, .. }));
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert!(matches!(check(&swapped), Verdict::Broken { line: 2, .. }));
        // A rotated file starts mid-chain and still checks.
        assert_eq!(
            check(&lines[2..]),
            Verdict::Intact {
                lines: 3,
                first_seq: 3,
                last_seq: 5
            }
        );
        let (body, chain) = unseal(&lines[4]).expect("sealed");
        assert_eq!(seq_of(&body), Some(5));
        assert_eq!(chain.len(), 64);
    }
}
