//! A throwaway public-key infrastructure for TLS tests: a CA, a server certificate for
//! `127.0.0.1` and `localhost`, and a client certificate, written as PEM files into a temp dir
//! of their own, plus the nats-server configuration that serves TLS with them.
//!
//! For tests only (keys are generated fresh and thrown away with the directory); it lives here so
//! that every crate's TLS tests share one implementation.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The PEM files of one test PKI; deleted when dropped.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(params)
}

/// A certificate for `names` signed by `issuer`, for `usage`; (certificate, key) as PEM.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TestPki {
    /// A new CA with its server certificate and a client certificate named `client_name`.
    pub fn generate(client_name: &str) -> Result<TestPki> {
        let dir = TempDir::new().context("temp dir for the test PKI")?;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params("rosey test ca")?.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params("rosey test ca")?, ca_key);
        let (server_cert, server_key) = leaf(
            &issuer,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) =
            leaf(&issuer, &[client_name], ExtendedKeyUsagePurpose::ClientAuth)?;
        let p = dir.path();
        Ok(TestPki {
            ca: write(p, "ca.pem", &ca_cert.pem())?,
            server_cert: write(p, "server.pem", &server_cert)?,
            server_key: write(p, "server-key.pem", &server_key)?,
            client_cert: write(p, "client.pem", &client_cert)?,
            client_key: write(p, "client-key.pem", &client_key)?,
            dir,
        })
    }

    /// The directory holding the files (a good place for a server config next to them).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// nats-server configuration for TLS only with these files; with `verify` the server also
    /// requires a client certificate signed by the CA (mutual TLS).
    pub fn server_config(&self, verify: bool) -> String {
        let q = |p: &Path| format!("{:?}", p.to_string_lossy());
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
            q(&self.server_cert),
            q(&self.server_key),
            q(&self.ca),
        )
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
