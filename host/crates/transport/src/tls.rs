//! The cluster's certificates and the TLS configurations built from them.
//!
//! A cluster has one certificate authority of its own, made by `wallaroo cert init DIR`
//! ([`init_certs`]). The directory then holds:
//!
//! | file       | what                                                             | secret |
//! |------------|------------------------------------------------------------------|--------|
//! | `ca.pem`   | the cluster CA's certificate: the only root anyone trusts         | no     |
//! | `ca.key`   | the CA's private key, to sign more certificates later             | yes    |
//! | `node.pem` | the node certificate, signed by the CA                            | no     |
//! | `node.key` | its private key                                                   | yes    |
//!
//! `wallaroo cert issue NAME` ([`issue_cert`]) gives a node (or a client) a certificate of its
//! own in a directory of its own, holding `ca.pem`, `node.pem` and `node.key` but not the CA's
//! key; the node certificate of `init` may also be shared by every node and client. Every node
//! certificate's only subject name is the DNS name [`SERVER_NAME`] (its common name is the
//! name it was issued to) and it carries both the `serverAuth` and `clientAuth` extended key
//! usages. Whoever holds a node key signed by the CA is a member of the cluster; addresses
//! are not part of the identity, so nodes can move without new certificates.
//!
//! Both ends authenticate (mutual TLS, TLS 1.3 only, `ring` crypto):
//! - a server requires a client certificate and verifies it against `ca.pem` alone
//!   (rustls' `WebPkiClientVerifier`);
//! - a client verifies the server's certificate against `ca.pem` alone, for the name
//!   [`SERVER_NAME`], whatever address it dialled.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The DNS name in every node certificate, and the name a client checks the server for.
pub const SERVER_NAME: &str = "wallaroo-node";

/// The protocol and its version, as both ends name it: the messages the streams carry (the
/// cluster's `Msg`) change only with it. Version 2: refusals are typed (kind, retry hint,
/// text) instead of a bare string.
pub const PROTOCOL: &str = "wallaroo/2";

/// The ALPN protocol both ends must offer; a peer that speaks something else (an older or a
/// newer version) is refused at the handshake.
pub const ALPN: &[u8] = PROTOCOL.as_bytes();

/// File names inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (only needed to sign certificates).
pub const CA_KEY_FILE: &str = "ca.key";
/// The node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node certificate's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// The files written by [`init_certs`] (and by [`issue_cert`], which writes no CA key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The cluster CA's certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The cluster CA's private key (`ca.key`, mode 0600).
    pub ca_key: PathBuf,
    /// The node certificate (`node.pem`).
    pub cert: PathBuf,
    /// The node certificate's private key (`node.key`, mode 0600).
    pub key: PathBuf,
}

impl CertFiles {
    /// The paths of the four files inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            cert: dir.join(NODE_CERT_FILE),
            key: dir.join(NODE_KEY_FILE),
        }
    }
}

/// The TLS set-up of one member of a cluster, both as server and as client. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

/// The crypto provider used everywhere in this crate.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClusterTls {
    /// Loads `DIR/ca.pem`, `DIR/node.pem` and `DIR/node.key`, and checks that the node
    /// certificate is signed by the CA and fits both roles (server for [`SERVER_NAME`], client).
    ///
    /// Errors name the missing or bad file and say to run `wallaroo cert init DIR`.
    pub fn load(dir: &Path) -> anyhow::Result<ClusterTls> {
        let files = CertFiles::in_dir(dir);
        Self::load_files(&files.ca, &files.cert, &files.key, true).map_err(|e| {
            anyhow!(
                "{e:#}; a cluster's certificates are made once with `wallaroo cert init {}`, \
                 and that directory is then copied to every node and to the machine that runs \
                 deploy/status/stop",
                dir.display()
            )
        })
    }

    /// Like [`ClusterTls::load`] but with the three files named one by one and without checking
    /// that the node certificate is signed by the CA. For tests of a misconfigured cluster.
    #[doc(hidden)]
    pub fn load_unchecked(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<ClusterTls> {
        Self::load_files(ca, cert, key, false)
    }

    fn load_files(
        ca_path: &Path,
        cert_path: &Path,
        key_path: &Path,
        check_chain: bool,
    ) -> anyhow::Result<ClusterTls> {
        let ca_pem = read(ca_path)?;
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let files = [ca_path, cert_path, key_path];
        Self::from_pem(&ca_pem, &cert_pem, &key_pem, files, check_chain)
    }

    /// The configurations from the three files' contents; `files` names them in errors.
    fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        [ca_path, cert_path, key_path]: [&Path; 3],
        check_chain: bool,
    ) -> anyhow::Result<ClusterTls> {
        let mut roots = RootCertStore::empty();
        let mut n_roots = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| anyhow!("{} is not valid PEM: {e}", ca_path.display()))?;
            roots.add(cert).map_err(|e| {
                anyhow!(
                    "{} holds a certificate that cannot be a root: {e}",
                    ca_path.display()
                )
            })?;
            n_roots += 1;
        }
        if n_roots == 0 {
            bail!("{} holds no certificate", ca_path.display());
        }
        let roots = Arc::new(roots);

        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{} is not valid PEM: {e}", cert_path.display()))?;
        let Some((end_entity, intermediates)) = chain.split_first() else {
            bail!("{} holds no certificate", cert_path.display());
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| anyhow!("{} holds no usable private key: {e}", key_path.display()))?;

        let provider = provider();
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .with_context(|| format!("cannot build a verifier from {}", ca_path.display()))?;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .with_context(|| format!("cannot build a verifier from {}", ca_path.display()))?;

        if check_chain {
            // The same checks a peer will make, so that a mix-up of files is reported here,
            // naming the files, rather than as a refused connection later.
            let now = UnixTime::now();
            client_verifier
                .verify_client_cert(end_entity, intermediates, now)
                .map_err(|e| {
                    anyhow!(
                        "{} does not pass as a client certificate of the CA in {}: {e}",
                        cert_path.display(),
                        ca_path.display()
                    )
                })?;
            let name = ServerName::try_from(SERVER_NAME).map_err(|e| anyhow!("{e}"))?;
            server_verifier
                .verify_server_cert(end_entity, intermediates, &name, &[], now)
                .map_err(|e| {
                    anyhow!(
                        "{} does not pass as a server certificate for `{SERVER_NAME}` of the CA in {}: {e}",
                        cert_path.display(),
                        ca_path.display()
                    )
                })?;
        }

        let unusable = |e: rustls::Error| {
            anyhow!(
                "{} and {} do not make a usable certificate and key: {e}",
                cert_path.display(),
                key_path.display()
            )
        };
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the ring provider does not offer TLS 1.3")?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(unusable)?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the ring provider does not offer TLS 1.3")?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(unusable)?;
        client.alpn_protocols = vec![ALPN.to_vec()];

        Ok(ClusterTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The rustls configuration for accepting connections.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The rustls configuration for making connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

/// Writes a new cluster CA (`DIR/ca.pem`, `DIR/ca.key`) and a node certificate signed by it
/// (`DIR/node.pem`, `DIR/node.key`); the key files get mode 0600. Creates `DIR` if needed.
///
/// Refuses to overwrite any of the four files unless `force`: a new CA cuts off every node
/// that still has the old one.
///
/// The node certificate's subject name is the DNS name [`SERVER_NAME`] and it is valid as
/// both a TLS server and client certificate; [`issue_cert`] makes more, one per node. Keys
/// are ECDSA P-256; certificates do not expire in practice (year 4096), so a cluster is cut
/// off by replacing its CA, not by a date.
pub fn init_certs(dir: &Path, force: bool) -> anyhow::Result<CertFiles> {
    let files = CertFiles::in_dir(dir);
    refuse_to_overwrite(
        &[&files.ca, &files.ca_key, &files.cert, &files.key],
        force,
        "a new CA would lock out every node that has the old one",
    )?;
    private_dir(dir)?;

    let ca_key = rcgen::KeyPair::generate().context("cannot generate the CA key")?;
    let ca_cert = ca_params(&ca_key)
        .self_signed(&ca_key)
        .context("cannot make the CA certificate")?;
    let issuer = rcgen::Issuer::new(ca_params(&ca_key), &ca_key);
    let (node_cert, node_key) = node_cert(&issuer, SERVER_NAME)?;

    // Keys first, so that a failure never leaves certificates without their keys.
    write_file(
        &files.ca_key,
        ca_key.serialize_pem().as_bytes(),
        true,
        force,
    )?;
    write_file(&files.key, node_key.serialize_pem().as_bytes(), true, force)?;
    write_file(&files.ca, ca_cert.pem().as_bytes(), false, force)?;
    write_file(&files.cert, node_cert.pem().as_bytes(), false, force)?;
    Ok(files)
}

/// Issues a certificate of its own to one member of the cluster, named `name`, signed by the
/// CA in `ca_dir` (which must hold `ca.key`). Writes `out/ca.pem`, `out/node.pem` and
/// `out/node.key`: all a node or client needs, and not the CA's key, so that a member cannot
/// make certificates. Refuses to overwrite them unless `force`. Returns the files written
/// (`ca_key` names the CA's key it was signed with).
pub fn issue_cert(ca_dir: &Path, out: &Path, name: &str, force: bool) -> anyhow::Result<CertFiles> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("'{name}' is not a certificate name: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    let ca = CertFiles::in_dir(ca_dir);
    let ca_key_pem = String::from_utf8(read(&ca.ca_key)?)
        .with_context(|| format!("{} is not a PEM file", ca.ca_key.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| {
        anyhow!(
            "{} is not the key of a cluster CA: {e}",
            ca.ca_key.display()
        )
    })?;
    let ca_pem = read(&ca.ca)?;

    let files = CertFiles {
        ca_key: ca.ca_key.clone(),
        ..CertFiles::in_dir(out)
    };
    refuse_to_overwrite(
        &[&files.ca, &files.cert, &files.key],
        force,
        "a node using them would lose its identity",
    )?;
    // The CA's certificate parameters follow from its key as `init_certs` made them, so the
    // issuer named in the new certificate is the CA's subject; before anything is written, the
    // new certificate is checked to chain to `ca.pem`.
    let issuer = rcgen::Issuer::new(ca_params(&ca_key), &ca_key);
    let (cert, key) = node_cert(&issuer, name)?;
    let (cert, key) = (cert.pem(), key.serialize_pem());
    ClusterTls::from_pem(
        &ca_pem,
        cert.as_bytes(),
        key.as_bytes(),
        [&ca.ca, &files.cert, &files.key],
        true,
    )
    .map_err(|e| {
        anyhow!(
            "{} and {} are not the certificate and key of one cluster CA ({e:#})",
            ca.ca.display(),
            ca.ca_key.display()
        )
    })?;
    private_dir(out)?;
    write_file(&files.key, key.as_bytes(), true, force)?;
    write_file(&files.ca, &ca_pem, false, force)?;
    write_file(&files.cert, cert.as_bytes(), false, force)?;
    Ok(files)
}

fn refuse_to_overwrite(paths: &[&PathBuf], force: bool, why: &str) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let existing: Vec<String> = paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already {}; {why} (use --force to replace anyway)",
            existing.join(", "),
            if existing.len() == 1 {
                "exists"
            } else {
                "exist"
            }
        );
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing; a new directory is private: it holds keys.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// The cluster CA's certificate parameters, all derived from its key.
fn ca_params(ca_key: &rcgen::KeyPair) -> rcgen::CertificateParams {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // Every cluster's CA gets a name of its own, so that a certificate of another cluster is
    // reported as from an unknown issuer rather than as a bad signature of this one.
    let ca_id: String = ca_key.public_key_raw()[1..9]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Wallaroo cluster CA {ca_id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A node certificate named `name` (its subject's common name), for the DNS name
/// [`SERVER_NAME`], valid as TLS server and client, with a new key.
fn node_cert(
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    name: &str,
) -> anyhow::Result<(rcgen::Certificate, rcgen::KeyPair)> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };

    let key = KeyPair::generate().context("cannot generate the node key")?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])
        .context("cannot make the node certificate")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .context("cannot sign the node certificate")?;
    Ok((cert, key))
}

/// Writes `contents` to `path`, mode 0600 if `secret` (also when the file existed before).
fn write_file(path: &Path, contents: &[u8], secret: bool, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    let mut options = fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.mode(if secret { 0o600 } else { 0o644 });
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    if secret {
        // `mode` only applies to a new file; a replaced key file must not stay readable.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
