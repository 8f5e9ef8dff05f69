//! Integration tests: real nats-server processes, started in parallel.
//!
//! They use `find_or_install()` like every other caller, so set
//! `NATS_SERVER_BIN` (or put nats-server on PATH) to avoid a first-run install.
//! The server checks here speak the NATS text protocol over a plain TcpStream,
//! so they test natskit's server half on its own; `natskit::client` (nkey,
//! credentials and TLS) is tested with async-nats in `it/client.rs`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    thread,
    time::Duration,
};

use natskit::{NatsServer, ServerOptions};
use serde_json::{json, Value};

#[path = "it/client.rs"]
mod client;
#[path = "it/drain.rs"]
mod drain;
#[path = "it/hostile.rs"]
mod hostile;

/// A minimal NATS client: enough for CONNECT, PING and request/reply.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_sid: u32,
}

impl Conn {
    /// Connects and authenticates with `connect` (extra CONNECT fields).
    /// Returns the server's reply to the first PING: `PONG` or an `-ERR`.
    fn open(port: u16, connect: Value) -> (Conn, String) {
        let writer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut conn = Conn {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            next_sid: 1,
        };
        assert!(conn.line().starts_with("INFO "));
        let mut fields = json!({"verbose": false, "pedantic": false});
        fields
            .as_object_mut()
            .unwrap()
            .extend(connect.as_object().unwrap().clone());
        write!(conn.writer, "CONNECT {fields}\r\nPING\r\n").unwrap();
        let reply = conn.line();
        (conn, reply)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Publishes `payload` to `subject` and returns the reply as JSON.
    fn request(&mut self, subject: &str, payload: &Value) -> Value {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.natskit.{sid}");
        let body = payload.to_string();
        write!(
            self.writer,
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n{body}\r\n",
            body.len()
        )
        .unwrap();
        loop {
            let line = self.line();
            assert!(!line.starts_with("-ERR"), "{line}");
            if let Some(header) = line.strip_prefix("MSG ") {
                let len: usize = header.rsplit(' ').next().unwrap().parse().unwrap();
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf).unwrap();
                return serde_json::from_slice(&buf[..len]).unwrap();
            }
        }
    }
}

fn connect(server: &NatsServer) -> Conn {
    let (conn, reply) = Conn::open(server.port(), json!({}));
    assert_eq!(reply, "PONG");
    conn
}

fn stream_messages(server: &NatsServer, stream: &str) -> Value {
    let info = connect(server).request(&format!("$JS.API.STREAM.INFO.{stream}"), &json!({}));
    info["state"]["messages"].clone()
}

/// Creates stream `S` on `s.>` holding one message.
fn create_stream_with_one_message(server: &NatsServer) {
    let mut conn = connect(server);
    let created = conn.request(
        "$JS.API.STREAM.CREATE.S",
        &json!({"name": "S", "subjects": ["s.>"], "storage": "file"}),
    );
    assert_eq!(created["config"]["name"], "S", "{created}");
    let ack = conn.request("s.1", &json!({"n": 1}));
    assert_eq!(ack["seq"], 1, "{ack}");
}

#[test]
fn parallel_servers_get_their_own_ports() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(NatsServer::start);
        let b = s.spawn(NatsServer::start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.pid(), b.pid());
    for server in [&a, &b] {
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        assert!(server.log_path().starts_with(server.dir()));
        assert_eq!(
            natskit::version_of(server.binary()).unwrap(),
            server.version()
        );
        connect(server);
    }
}

#[test]
fn restart_keeps_port_and_jetstream_store() {
    let mut server = NatsServer::start().unwrap();
    let (port, pid) = (server.port(), server.pid());
    let store_dir = server.store_dir().unwrap().to_owned();
    assert!(store_dir.starts_with(server.dir()));
    create_stream_with_one_message(&server);

    server.restart().unwrap();

    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), pid);
    assert_eq!(server.store_dir(), Some(store_dir.as_path()));
    assert_eq!(stream_messages(&server, "S"), 1);
}

#[test]
fn a_killed_server_starts_again_on_its_port_and_store() {
    let mut server = NatsServer::start().unwrap();
    let (port, pid) = (server.port(), server.pid());
    create_stream_with_one_message(&server);

    server.kill().unwrap();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.kill().unwrap(); // killing a stopped server does nothing
    server.start_again().unwrap();

    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), pid);
    assert!(server.start_again().is_err(), "already running");
    assert_eq!(stream_messages(&server, "S"), 1);
}

#[test]
fn store_dir_outlives_the_server() {
    let store = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        jetstream: true,
        store_dir: Some(store.path().to_owned()),
        ..ServerOptions::default()
    };
    let mut first = NatsServer::start_with(opts.clone()).unwrap();
    create_stream_with_one_message(&first);
    first.stop().unwrap();
    drop(first);

    let second = NatsServer::start_with(opts).unwrap();
    assert_eq!(stream_messages(&second, "S"), 1);
}

#[test]
fn stop_is_idempotent() {
    let mut server = NatsServer::start_with(ServerOptions::default()).unwrap();
    assert_eq!(server.store_dir(), None);
    server.stop().unwrap();
    server.stop().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", server.port())).is_err());
}

#[test]
fn token_is_required() {
    let server = NatsServer::start_with(ServerOptions {
        token: Some("s3cret".into()),
        ..ServerOptions::default()
    })
    .unwrap();
    let (_, reply) = Conn::open(server.port(), json!({}));
    assert!(reply.contains("Authorization Violation"), "{reply}");
    let (_, reply) = Conn::open(server.port(), json!({"auth_token": "s3cret"}));
    assert_eq!(reply, "PONG");
}

#[test]
fn user_and_password_are_required() {
    let server = NatsServer::start_with(ServerOptions {
        user_password: Some(("alice".into(), "pw".into())),
        ..ServerOptions::default()
    })
    .unwrap();
    let (_, reply) = Conn::open(server.port(), json!({"user": "alice", "pass": "wrong"}));
    assert!(reply.contains("Authorization Violation"), "{reply}");
    let (_, reply) = Conn::open(server.port(), json!({"user": "alice", "pass": "pw"}));
    assert_eq!(reply, "PONG");
}

#[test]
fn bogus_binary_error_names_the_path() {
    let bogus = PathBuf::from("/nonexistent/natskit-test/nats-server");
    let err = NatsServer::start_with(ServerOptions {
        binary: Some(bogus.clone()),
        ..ServerOptions::default()
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(bogus.to_str().unwrap()), "{message}");
}

#[test]
fn early_exit_reports_status_and_log() {
    let err = NatsServer::start_with(ServerOptions {
        extra_args: vec!["--no-such-flag".into()],
        ..ServerOptions::default()
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("exited during startup"), "{message}");
    assert!(message.contains("no-such-flag"), "{message}");
}
