//! Frames no ordinary client sends: raw NATS publishes whose subject, reply subject or header
//! block a NATS client cannot read, and a plain-socket publisher that puts them on the wire.
//!
//! The server forwards all of them byte for byte. Unpatched, async-nats dropped its whole
//! connection on each (see `natskit/vendor/async-nats/PATCHED.md`); the tests of every
//! service and the harness's `hostile_inputs` scenario send this one battery to prove that a
//! service stays connected and counts each frame.
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
}
