//! gRPC's C core (under the Python, Ruby and PHP clients, py-spiffe's among them) sends
//! the socket path, percent-encoded, as HTTP/2 `:authority` on a unix socket. The h2
//! server under tonic refuses that as a malformed authority and resets the stream, so
//! those clients could not talk to the Workload API at all.
//!
//! The authority means nothing on a unix socket, so the daemon rewrites it on the way
//! in: every header block the client sends is decoded (HPACK, with the client's
//! dynamic table), its `:authority` set to `localhost`, and encoded again for h2 (with
//! a table of our own that h2's decoder follows). All other frames pass untouched, and
//! nothing the server sends is changed.

use loona_hpack::{Decoder, Encoder};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept.
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted (h2's own limit is 16 KiB of decoded headers).
const MAX_BLOCK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("not an HTTP/2 connection")]
    Preface,
    #[error("malformed HTTP/2 frame")]
    Frame,
    #[error("header block: {0}")]
    Hpack(String),
}

/// A header block being collected across HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// The client-to-server half of one connection.
pub struct AuthorityFix {
    buf: Vec<u8>,
    preface_done: bool,
    pending: Option<Pending>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            preface_done: false,
            pending: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
        }
    }
}

fn frame_header(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl AuthorityFix {
    /// Take bytes the client sent; append what h2 should read to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), FixError> {
        self.buf.extend_from_slice(input);
        if !self.preface_done {
            let n = self.buf.len().min(PREFACE.len());
            if self.buf[..n] != PREFACE[..n] {
                return Err(FixError::Preface);
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            out.extend_from_slice(PREFACE);
            self.buf.drain(..PREFACE.len());
            self.preface_done = true;
        }
        let mut at = 0;
        while self.buf.len() - at >= 9 {
            let h = &self.buf[at..at + 9];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            if self.buf.len() - at < 9 + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = self.buf[at + 9..at + 9 + len].to_vec();
            match kind {
                HEADERS => {
                    if self.pending.is_some() {
                        return Err(FixError::Frame);
                    }
                    let fragment = headers_fragment(&payload, flags)?;
                    self.pending = Some(Pending {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        block: fragment.to_vec(),
                    });
                }
                CONTINUATION => match &mut self.pending {
                    Some(p) if p.stream == stream => p.block.extend_from_slice(&payload),
                    _ => return Err(FixError::Frame),
                },
                _ => {
                    // Nothing may come between a header block's frames.
                    if self.pending.is_some() {
                        return Err(FixError::Frame);
                    }
                    out.extend_from_slice(&self.buf[at..at + 9 + len]);
                }
            }
            if matches!(kind, HEADERS | CONTINUATION) {
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.block.len() > MAX_BLOCK)
                {
                    return Err(FixError::Hpack("header block too large".into()));
                }
                if flags & END_HEADERS != 0
                    && let Some(p) = self.pending.take()
                {
                    self.reencode(&p, out)?;
                }
            }
            at += 9 + len;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn reencode(&mut self, p: &Pending, out: &mut Vec<u8>) -> Result<(), FixError> {
        let mut headers = self
            .decoder
            .decode(&p.block)
            .map_err(|e| FixError::Hpack(e.to_string()))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                *value = b"localhost".to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut first = true;
        // An empty block still needs its HEADERS frame.
        if block.is_empty() {
            let flags = END_HEADERS | if p.end_stream { END_STREAM } else { 0 };
            frame_header(0, HEADERS, flags, p.stream, out);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (kind, mut flags) = if first {
                (HEADERS, if p.end_stream { END_STREAM } else { 0 })
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            frame_header(chunk.len(), kind, flags, p.stream, out);
            out.extend_from_slice(chunk);
            first = false;
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS payload, without padding and priority.
fn headers_fragment(payload: &[u8], flags: u8) -> Result<&[u8], FixError> {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or(FixError::Frame)?);
        start = 1;
        end = end.checked_sub(pad).ok_or(FixError::Frame)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end).ok_or(FixError::Frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(enc: &mut Encoder<'static>, authority: &[u8], flags: u8) -> Vec<u8> {
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (&b":path"[..], &b"/SpiffeWorkloadAPI/FetchX509SVID"[..]),
            (&b":authority"[..], authority),
            (&b"workload.spiffe.io"[..], &b"true"[..]),
        ]);
        let mut f = Vec::new();
        frame_header(block.len(), HEADERS, flags | END_HEADERS, 1, &mut f);
        f.extend_from_slice(&block);
        f
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let mut at = PREFACE.len();
        assert_eq!(&bytes[..at], PREFACE);
        while at < bytes.len() {
            let len = usize::from(bytes[at]) << 16
                | usize::from(bytes[at + 1]) << 8
                | usize::from(bytes[at + 2]);
            if bytes[at + 3] == HEADERS {
                out.push(dec.decode(&bytes[at + 9..at + 9 + len]).expect("decode"));
            }
            at += 9 + len;
        }
        out
    }

    #[test]
    fn rewrites_the_authority_and_keeps_everything_else() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        // SETTINGS, passed through as it is.
        frame_header(0, 0x4, 0, 0, &mut input);
        input.extend(headers_frame(&mut client, b"%2Frun%2Fsocket", 0));
        // The second request refers to the client's dynamic table.
        input.extend(headers_frame(&mut client, b"%2Frun%2Fsocket", END_STREAM));
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        // Byte by byte: frames split anywhere are put back together.
        for b in &input {
            fix.feed(std::slice::from_ref(b), &mut out).expect("feed");
        }
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b
                .iter()
                .find(|(n, _)| n == b":authority")
                .expect("authority");
            assert_eq!(auth.1, b"localhost");
            assert!(
                b.iter()
                    .any(|(n, v)| n == b"workload.spiffe.io" && v == b"true")
            );
        }
        // The settings frame is still there, and END_STREAM kept on the second.
        assert_eq!(out[PREFACE.len() + 3], 0x4);
        let second_flags = {
            let mut at = PREFACE.len() + 9;
            let len = |at: usize| {
                usize::from(out[at]) << 16
                    | usize::from(out[at + 1]) << 8
                    | usize::from(out[at + 2])
            };
            at += 9 + len(at);
            out[at + 4]
        };
        assert_eq!(second_flags & END_STREAM, END_STREAM);
    }

    #[test]
    fn refuses_what_is_not_http2() {
        let mut fix = AuthorityFix::default();
        assert!(matches!(
            fix.feed(b"GET / HTTP/1.1\r\n", &mut Vec::new()),
            Err(FixError::Preface)
        ));
        let mut fix = AuthorityFix::default();
        let mut input = PREFACE.to_vec();
        frame_header(1, CONTINUATION, END_HEADERS, 1, &mut input);
        input.push(0);
        assert!(
            fix.feed(&input, &mut Vec::new()).is_err(),
            "continuation without headers"
        );
    }

    #[test]
    fn padding_and_priority_are_dropped() {
        let mut client = Encoder::new();
        let block = client.encode([(&b":authority"[..], &b"x%2Fy"[..])]);
        let mut payload = vec![2u8]; // pad length
        payload.extend([0, 0, 0, 0, 16]); // priority
        payload.extend(&block);
        payload.extend([0, 0]);
        let mut input = PREFACE.to_vec();
        frame_header(
            payload.len(),
            HEADERS,
            PADDED | PRIORITY | END_HEADERS,
            3,
            &mut input,
        );
        input.extend(payload);
        let mut out = Vec::new();
        AuthorityFix::default()
            .feed(&input, &mut out)
            .expect("feed");
        let blocks = decode_all(&out);
        assert_eq!(
            blocks[0],
            vec![(b":authority".to_vec(), b"localhost".to_vec())]
        );
    }
}
