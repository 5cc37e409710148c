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
//! The same node certificate is used by every node and by the clients (deploy, status, stop):
//! its only subject name is the DNS name [`SERVER_NAME`] and it carries both the `serverAuth`
//! and `clientAuth` extended key usages. Whoever holds `node.key` is a member of the cluster;
//! addresses are not part of the identity, so nodes can move without new certificates.
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

/// The ALPN protocol both ends must offer; a peer that speaks something else is refused.
pub const ALPN: &[u8] = b"wallaroo/1";

/// File names inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (only needed to sign certificates).
pub const CA_KEY_FILE: &str = "ca.key";
/// The node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node certificate's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// The files written by [`init_certs`].
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

        let mut roots = RootCertStore::empty();
        let mut n_roots = 0;
        for cert in CertificateDer::pem_slice_iter(&ca_pem) {
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

        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{} is not valid PEM: {e}", cert_path.display()))?;
        let Some((end_entity, intermediates)) = chain.split_first() else {
            bail!("{} holds no certificate", cert_path.display());
        };
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
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

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the ring provider does not offer TLS 1.3")?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                anyhow!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
        server.alpn_protocols = vec![ALPN.to_vec()];

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("the ring provider does not offer TLS 1.3")?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                anyhow!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    cert_path.display(),
                    key_path.display()
                )
            })?;
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
/// The node certificate is used by every node and by the deploy/status/stop client; its subject
/// name is the DNS name [`SERVER_NAME`] and it is valid as both a TLS server and client
/// certificate. Keys are ECDSA P-256; certificates do not expire in practice (year 4096), so
/// a cluster is cut off by replacing its CA, not by a date.
pub fn init_certs(dir: &Path, force: bool) -> anyhow::Result<CertFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    let files = CertFiles::in_dir(dir);
    if !force {
        let existing: Vec<String> = [&files.ca, &files.ca_key, &files.cert, &files.key]
            .into_iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already {}; a new CA would lock out every node that has the old one \
                 (use --force to replace it anyway)",
                existing.join(", "),
                if existing.len() == 1 {
                    "exists"
                } else {
                    "exist"
                }
            );
        }
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // A new directory is private: it holds keys.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    // Every cluster's CA gets a name of its own, so that a certificate of another cluster is
    // reported as from an unknown issuer rather than as a bad signature of this one.
    let ca_id: String = ca_key.public_key_raw()[1..9]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Wallaroo cluster CA {ca_id}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot make the CA certificate")?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);

    let node_key = KeyPair::generate().context("cannot generate the node key")?;
    let mut node_params = CertificateParams::new(vec![SERVER_NAME.to_string()])
        .context("cannot make the node certificate")?;
    node_params.distinguished_name = rcgen::DistinguishedName::new();
    node_params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    node_params.is_ca = IsCa::ExplicitNoCa;
    node_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node_params.use_authority_key_identifier_extension = true;
    let node_cert = node_params
        .signed_by(&node_key, &issuer)
        .context("cannot sign the node certificate")?;

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
