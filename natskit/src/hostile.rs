//! Frames no ordinary client sends: raw NATS publishes whose subject, reply subject or header
//! block a NATS client cannot read, and a plain-socket publisher that puts them on the wire.
//!
//! The server forwards all of them byte for byte. Unpatched, async-nats dropped its whole
//! connection on each (see `natskit/vendor/async-nats/PATCHED.md`); the tests of every
//! service and the harness's `hostile_inputs` scenario send this one battery to prove that a
//! service stays connected and counts each frame.
//!
//! [`Mutator`] and [`fuzz`] are the other half of hostile input: valid payloads damaged at random
//! (seeded), fed to a decoder until a budget is spent; the services' fuzz tests and `cargo xtask
//! fuzz` use them.
//!
//! ```no_run
//! let frames = natskit::hostile::frames("rosey.db.message.log", "rosey.db.message", b"{}");
//! natskit::hostile::publish_raw("127.0.0.1:4222", &frames)?;
//! # anyhow::Ok(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// One raw protocol frame (`PUB` or `HPUB`, with its payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What is wrong with it, for messages and reports (`subject_not_utf8`, ...).
    pub kind: &'static str,
    /// The bytes on the wire, protocol line to the payload's final CRLF.
    pub bytes: Vec<u8>,
    /// Whether it goes to `subject` itself: a subscriber of that exact subject receives it.
    /// The others carry a subject under `wildcard_prefix` that no exact subscription matches.
    pub exact_subject: bool,
}

/// The battery: each kind of unreadable frame once, `payload` as the body.
///
/// - `subject_not_utf8`: published to `<wildcard_prefix>.\xff` (reaches wildcard subscribers);
/// - `reply_not_utf8`: to `subject` with a reply subject that is not UTF-8;
/// - `header_not_utf8`, `header_without_colon`, `header_bad_status`,
///   `header_without_version`: to `subject`, with a header block the client cannot parse.
pub fn frames(subject: &str, wildcard_prefix: &str, payload: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut subject_bad = wildcard_prefix.as_bytes().to_vec();
    subject_bad.extend_from_slice(b".\xff\xfe");
    out.push(Frame {
        kind: "subject_not_utf8",
        bytes: pub_frame(&subject_bad, None, payload),
        exact_subject: false,
    });
    out.push(Frame {
        kind: "reply_not_utf8",
        bytes: pub_frame(subject.as_bytes(), Some(b"_INBOX.hostile.\xff"), payload),
        exact_subject: true,
    });
    for (kind, block) in [
        (
            "header_not_utf8",
            &b"NATS/1.0\r\nRosey-Event-Id: \xff\xfe\r\n\r\n"[..],
        ),
        (
            "header_without_colon",
            &b"NATS/1.0\r\nno colon here\r\n\r\n"[..],
        ),
        ("header_bad_status", &b"NATS/1.0 abc\r\n\r\n"[..]),
        ("header_without_version", &b"HTTP/1.1 200\r\n\r\n"[..]),
    ] {
        out.push(Frame {
            kind,
            bytes: hpub_frame(subject.as_bytes(), None, block, payload),
            exact_subject: true,
        });
    }
    out
}

/// `PUB <subject> [reply] <len>\r\n<payload>\r\n`.
pub fn pub_frame(subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut f = b"PUB ".to_vec();
    f.extend_from_slice(subject);
    if let Some(reply) = reply {
        f.push(b' ');
        f.extend_from_slice(reply);
    }
    f.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(b"\r\n");
    f
}

/// `HPUB <subject> [reply] <header len> <total len>\r\n<headers><payload>\r\n`.
pub fn hpub_frame(subject: &[u8], reply: Option<&[u8]>, headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = b"HPUB ".to_vec();
    f.extend_from_slice(subject);
    if let Some(reply) = reply {
        f.push(b' ');
        f.extend_from_slice(reply);
    }
    let total = headers.len() + payload.len();
    f.extend_from_slice(format!(" {} {total}\r\n", headers.len()).as_bytes());
    f.extend_from_slice(headers);
    f.extend_from_slice(payload);
    f.extend_from_slice(b"\r\n");
    f
}

/// Sends `frames` from a plain TCP connection to the server at `addr` (`host:port`, no TLS, no
/// authentication) and returns once the server has processed them all (a `PING` answered by
/// `PONG`). Fails if the server answers anything with `-ERR`.
pub fn publish_raw(addr: &str, frames: &[Frame]) -> Result<()> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).context("reading INFO")?;
    if !line.starts_with("INFO ") {
        bail!("{addr} did not greet with INFO: {line:?}");
    }
    writer.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"name\":\"hostile\"}\r\n",
    )?;
    for frame in frames {
        writer.write_all(&frame.bytes)?;
    }
    writer.write_all(b"PING\r\n")?;
    loop {
        line.clear();
        if reader.read_line(&mut line).context("waiting for PONG")? == 0 {
            bail!("{addr} closed the connection before PONG");
        }
        match line.trim_end() {
            "PONG" => return Ok(()),
            "PING" => writer.write_all(b"PONG\r\n")?,
            l if l.starts_with("-ERR") => bail!("{addr} refused a frame: {l}"),
            _ => {}
        }
    }
}

/// A mutation fuzzer's source of inputs: valid inputs from a corpus, damaged in one to four
/// random ways (bit flips, bytes that matter to JSON and UTF-8, tokens that stress number and
/// string parsing, deletions, duplications, truncations, splices of two inputs). Seeded, so a
/// failing input is found again from its seed and index.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

/// Bytes that change how JSON or UTF-8 is read.
const INTERESTING_BYTES: &[u8] = b"\x00\xff\xc3\x80\xed\xa0\"{}[],:\\0123456789-+.eEnull\n\t ";

/// Tokens that stress number, string and nesting parsing.
const INTERESTING_TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"-0",
    b"1e999",
    b"-1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"0.1e-400",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"[]",
    b"{}",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\"\xf0\x9f\x98\x80\"",
    b"\xef\xbb\xbf",
    b"\"a\":1,\"a\":2",
];

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// xorshift64*: enough randomness for choosing mutations, no dependency.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One input: a corpus entry, damaged.
    pub fn mutate(&mut self, corpus: &[&[u8]]) -> Vec<u8> {
        let mut v = corpus[self.below(corpus.len())].to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(v.len() + 1);
            match self.below(8) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = INTERESTING_BYTES[self.below(INTERESTING_BYTES.len())];
                }
                2 => {
                    let b = INTERESTING_BYTES[self.below(INTERESTING_BYTES.len())];
                    v.insert(at, b);
                }
                3 => {
                    let tok = INTERESTING_TOKENS[self.below(INTERESTING_TOKENS.len())];
                    v.splice(at..at, tok.iter().copied());
                }
                4 if !v.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(v.len());
                    v.drain(at.min(end)..end);
                }
                5 if !v.is_empty() => {
                    let start = self.below(v.len());
                    let end = (start + 1 + self.below(32)).min(v.len());
                    let piece = v[start..end].to_vec();
                    v.splice(at..at, piece);
                }
                6 => v.truncate(at),
                _ => {
                    let other = corpus[self.below(corpus.len())];
                    let from = self.below(other.len() + 1);
                    v.truncate(at);
                    v.extend_from_slice(&other[from..]);
                }
            }
        }
        v
    }
}

/// How long a fuzz run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Inputs(u64),
    Time(Duration),
}

/// The variable `cargo xtask fuzz` sets to a number of seconds for the fuzz tests.
pub const FUZZ_SECONDS_VAR: &str = "ROSEY_FUZZ_SECONDS";

impl Budget {
    /// `seconds` (the value of [`FUZZ_SECONDS_VAR`], if set) as a time budget, else `inputs`
    /// inputs: a fuzz test's budget, long under `cargo xtask fuzz`, short in the test suite.
    pub fn seconds_or_inputs(seconds: Option<&str>, inputs: u64) -> Result<Budget> {
        match seconds {
            Some(s) => {
                let secs: f64 = s.trim().parse().with_context(|| {
                    format!("{FUZZ_SECONDS_VAR}={s:?} is not a number of seconds")
                })?;
                anyhow::ensure!(
                    secs.is_finite() && secs > 0.0,
                    "{FUZZ_SECONDS_VAR} must be a positive number of seconds"
                );
                Ok(Budget::Time(Duration::from_secs_f64(secs)))
            }
            None => Ok(Budget::Inputs(inputs)),
        }
    }
}

/// What a fuzz run did.
#[derive(Debug, Clone, Copy)]
pub struct FuzzReport {
    pub inputs: u64,
    pub elapsed: Duration,
}

/// Feeds `check` mutated corpus inputs (seed `seed`) until `budget` is spent. Fails on the first
/// input that makes `check` panic, naming the seed, its index and the input (hex).
pub fn fuzz(
    corpus: &[&[u8]],
    seed: u64,
    budget: Budget,
    mut check: impl FnMut(&[u8]),
) -> Result<FuzzReport> {
    anyhow::ensure!(!corpus.is_empty(), "an empty corpus");
    let mut m = Mutator::new(seed);
    let start = std::time::Instant::now();
    let mut inputs = 0u64;
    loop {
        match budget {
            Budget::Inputs(n) if inputs >= n => break,
            // The clock is read every 1,024 inputs.
            Budget::Time(d) if inputs.is_multiple_of(1024) && start.elapsed() >= d => break,
            _ => {}
        }
        let input = m.mutate(corpus);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if outcome.is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            bail!("input {inputs} of seed {seed} panicked: {hex}");
        }
        inputs += 1;
    }
    Ok(FuzzReport {
        inputs,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed_protocol() {
        let f = frames("a.b", "a", b"hi");
        assert_eq!(f.len(), 6);
        assert_eq!(f[0].bytes, b"PUB a.\xff\xfe 2\r\nhi\r\n");
        assert_eq!(f[1].bytes, b"PUB a.b _INBOX.hostile.\xff 2\r\nhi\r\n");
        assert_eq!(
            hpub_frame(b"a.b", Some(b"r"), b"NATS/1.0\r\n\r\n", b"hi"),
            b"HPUB a.b r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        assert!(f.iter().filter(|f| f.exact_subject).count() == 5);
    }

    #[test]
    fn the_mutator_is_deterministic_and_damages_its_input() {
        let corpus: &[&[u8]] = &[br#"{"username": "amy", "message": "hi"}"#];
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7);
            (0..100).map(|_| m.mutate(corpus)).collect()
        };
        let mut m = Mutator::new(7);
        let b: Vec<Vec<u8>> = (0..100).map(|_| m.mutate(corpus)).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|v| v.as_slice() != corpus[0]).count() > 90);
    }

    #[test]
    fn budgets_come_from_seconds_or_a_count() {
        assert!(matches!(
            Budget::seconds_or_inputs(None, 5).unwrap(),
            Budget::Inputs(5)
        ));
        assert!(matches!(
            Budget::seconds_or_inputs(Some("1.5"), 5).unwrap(),
            Budget::Time(d) if d == Duration::from_millis(1500)
        ));
        assert!(Budget::seconds_or_inputs(Some("soon"), 5).is_err());
        assert!(Budget::seconds_or_inputs(Some("-1"), 5).is_err());
    }

    #[test]
    fn fuzz_reports_the_input_that_panicked() {
        let corpus: &[&[u8]] = &[b"ab"];
        let ok = fuzz(corpus, 1, Budget::Inputs(1000), |_| {}).unwrap();
        assert_eq!(ok.inputs, 1000);
        let err = fuzz(corpus, 1, Budget::Inputs(1000), |input| {
            assert!(!input.is_empty(), "empty");
        })
        .unwrap_err();
        assert!(err.to_string().contains("of seed 1 panicked"), "{err}");
    }
}
