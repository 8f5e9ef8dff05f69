//! Authentication: user/password and token against servers that require them; wrong
//! credentials give a clear error; the config file's [nats] table is honoured by the binary.

use crate::binary::ServiceProcess;
use crate::support::*;
use natskit::{NatsServer, ServerOptions};
use rosey_protocol::connect::NatsConnectConfig;
use rosey_protocol::subjects;

fn server_with(opts: ServerOptions) -> NatsServer {
    NatsServer::start_with(ServerOptions {
        jetstream: true,
        ..opts
    })
    .expect("start nats-server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password() {
    let server = server_with(ServerOptions {
        user_password: Some(("rosey".into(), "s3cret".into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server, dir.path().join("a.db"));
    c.nats = NatsConnectConfig {
        url: server.url().to_owned(),
        user: Some("rosey".into()),
        password: Some("wrong".into()),
        ..Default::default()
    };
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("authorization violation"), "{e}");
    assert!(!e.contains("wrong"), "the password is not echoed: {e}");

    c.nats.password = Some("s3cret".into());
    let service = rosey_dbservice::spawn(c).await.unwrap();
    let client =
        async_nats::ConnectOptions::with_user_and_password("rosey".into(), "s3cret".into())
            .connect(server.url())
            .await
            .unwrap();
    let reply = request(&client, subjects::SERVICE_PING, b"").await;
    assert!(reply.starts_with(br#"{"success": true"#));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = server_with(ServerOptions {
        token: Some("t0ken".into()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server, dir.path().join("a.db"));
    c.nats = NatsConnectConfig {
        url: server.url().to_owned(),
        token: Some("nope".into()),
        ..Default::default()
    };
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("authorization violation"), "{e}");
    c.nats.token = None;
    let e = format!("{:#}", rosey_dbservice::spawn(c.clone()).await.unwrap_err());
    assert!(e.contains("connecting to nats"), "{e}");

    c.nats.token = Some("t0ken".into());
    let service = rosey_dbservice::spawn(c).await.unwrap();
    assert_eq!(service.stats().mode, "core");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_credentials_from_the_config_file_and_stops_on_sigterm() {
    let server = server_with(ServerOptions {
        user_password: Some(("svc".into(), "pw".into())),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dbservice.toml");
    let db = dir.path().join("file.db");
    std::fs::write(
        &cfg,
        format!(
            "db_path = {:?}\nmode = \"durable\"\ncommit_notices = true\n[nats]\nurl = {:?}\nuser = \"svc\"\npassword = \"pw\"\n",
            db.to_str().unwrap(),
            server.url()
        ),
    )
    .unwrap();
    // A flag overrides the file: the mode becomes core.
    let p = ServiceProcess::start(&["--config", cfg.to_str().unwrap(), "--mode", "core"]).await;
    let client = async_nats::ConnectOptions::with_user_and_password("svc".into(), "pw".into())
        .connect(server.url())
        .await
        .unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&request(&client, subjects::SERVICE_PING, b"").await).unwrap();
    assert_eq!(stats["mode"], "core");
    p.terminate().await;
    assert!(db.exists());
}
