//! Endpoints on 127.0.0.1 talking to each other with certificates from `init_certs`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wallaroo_transport::tls::{CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use wallaroo_transport::{ClusterTls, Connection, Endpoint, MAX_FRAME, init_certs, issue_cert};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Hello { name: String },
    Batch { seq: u64, payloads: Vec<ByteBuf> },
    Ack { seq: u64, bytes: u64 },
}

fn cluster() -> (tempfile::TempDir, ClusterTls) {
    let dir = tempfile::tempdir().expect("tempdir");
    init_certs(dir.path(), false).expect("init_certs");
    let tls = ClusterTls::load(dir.path()).expect("load");
    (dir, tls)
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// Captures what the crate logs, for the test's own thread (a current-thread runtime runs
/// every spawned task there).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

/// Answers every `Batch` on every stream with an `Ack`, and `Hello` with `Hello`.
async fn echo_server(conn: Connection) -> anyhow::Result<()> {
    while let Some((mut tx, mut rx)) = conn.accept::<Msg, Msg>().await? {
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await? {
                let reply = match msg {
                    Msg::Hello { name } => Msg::Hello {
                        name: format!("hello, {name}"),
                    },
                    Msg::Batch { seq, payloads } => Msg::Ack {
                        seq,
                        bytes: payloads.iter().map(|p| p.len() as u64).sum(),
                    },
                    Msg::Ack { .. } => anyhow::bail!("unexpected ack"),
                };
                tx.send(&reply).await?;
            }
            tx.finish().await
        });
    }
    Ok(())
}

/// Echoes every stream of every connection `node` accepts, until it closes.
fn echo_all(node: Endpoint) {
    tokio::spawn(async move {
        while let Some(conn) = node.accept().await {
            tokio::spawn(echo_server(conn));
        }
    });
}

async fn exchange(conn: &Connection) -> anyhow::Result<()> {
    let (mut tx, mut rx) = conn.open::<Msg, Msg>().await?;
    tx.send(&Msg::Hello { name: "a".into() }).await?;
    assert_eq!(
        rx.recv().await?,
        Some(Msg::Hello {
            name: "hello, a".into()
        })
    );
    for seq in 0..5u64 {
        let payloads = (0..=seq)
            .map(|i| ByteBuf::from(vec![i as u8; 1000 * (seq as usize + 1)]))
            .collect::<Vec<_>>();
        tx.send(&Msg::Batch { seq, payloads }).await?;
    }
    for seq in 0..5u64 {
        let n = seq + 1;
        assert_eq!(
            rx.recv().await?,
            Some(Msg::Ack {
                seq,
                bytes: n * 1000 * n
            })
        );
    }
    // A big frame (4 MiB), both ways through the windows.
    let big = ByteBuf::from((0..4 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    tx.send(&Msg::Batch {
        seq: 99,
        payloads: vec![big],
    })
    .await?;
    assert_eq!(
        rx.recv().await?,
        Some(Msg::Ack {
            seq: 99,
            bytes: 4 << 20
        })
    );
    tx.finish().await?;
    assert_eq!(
        rx.recv().await?,
        None,
        "clean end of stream after the server finished"
    );
    Ok(())
}

#[tokio::test]
async fn two_nodes_exchange_frames_both_ways() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let other = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;

    let server = tokio::spawn({
        let node = node.clone();
        async move {
            let conn = node.accept().await.expect("a connection");
            assert_eq!(conn.remote_address().ip(), localhost().ip());
            echo_server(conn.clone()).await?;
            anyhow::Ok(conn)
        }
    });

    let conn = other.connect(addr).await?;
    assert_eq!(conn.remote_address(), addr);
    exchange(&conn).await?;
    // Two streams at once on the same connection.
    let (a, b) = tokio::join!(exchange(&conn), exchange(&conn));
    a?;
    b?;
    assert!(
        conn.bytes_sent() > 3 * (4 << 20),
        "sent {}",
        conn.bytes_sent()
    );
    assert!(conn.bytes_received() > 0);

    conn.close("done");
    let server_conn = server.await??;
    assert!(server_conn.bytes_sent() > 0);
    assert!(
        server_conn.closed().await.contains("done"),
        "the peer's reason reaches the other side"
    );
    assert!(conn.closed().await.contains("closed by this side"));

    node.close();
    assert!(
        node.accept().await.is_none(),
        "a closed endpoint accepts nothing"
    );
    other.close();
    node.wait_idle().await;
    Ok(())
}

#[tokio::test]
async fn cli_client_endpoint_connects_over_ipv4() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;
    echo_all(node.clone());

    let client = Endpoint::client(&tls)?;
    assert!(
        client.accept().await.is_none(),
        "a client endpoint accepts nothing"
    );
    let conn = client.connect(addr).await?;
    assert_eq!(
        conn.remote_address(),
        addr,
        "IPv4 even on a dual-stack socket"
    );
    exchange(&conn).await?;
    client.close();
    client.wait_idle().await;
    Ok(())
}

#[tokio::test]
async fn client_of_another_cluster_cannot_connect() -> anyhow::Result<()> {
    let log = Log::default();
    let _guard = log.install();
    let (_dir, tls) = cluster();
    let (_other_dir, stranger_tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;

    let stranger = Endpoint::bind(localhost(), &stranger_tls)?;
    let err = stranger
        .connect(addr)
        .await
        .expect_err("a stranger must not connect");
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    // With a whole other directory, the stranger already refuses the node's certificate.
    assert!(
        text.contains("certificate") && text.contains("not signed by this cluster's CA"),
        "{text}"
    );

    let accepted = tokio::time::timeout(Duration::from_millis(500), node.accept()).await;
    assert!(accepted.is_err(), "the node must not yield that connection");
    let logged = log.text();
    eprintln!("{logged}");
    assert!(
        logged.contains("refused a connection from 127.0.0.1:") && logged.contains("certificate"),
        "{logged}"
    );
    Ok(())
}

/// A client that trusts the cluster's CA but holds a node certificate of another CA (files
/// mixed up between two `cert init`s): the node refuses it, and `connect` says so.
#[tokio::test]
async fn node_refuses_a_client_certificate_of_another_ca() -> anyhow::Result<()> {
    let log = Log::default();
    let _guard = log.install();
    let (dir, tls) = cluster();
    let (other_dir, _) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;

    let mixed = ClusterTls::load_unchecked(
        &dir.path().join(CA_CERT_FILE),
        &other_dir.path().join(NODE_CERT_FILE),
        &other_dir.path().join(NODE_KEY_FILE),
    )?;
    let client = Endpoint::client(&mixed)?;
    let err = client
        .connect(addr)
        .await
        .expect_err("the node must refuse a certificate of another CA");
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(
        text.contains(&format!("cannot connect to {addr}")),
        "{text}"
    );
    assert!(text.contains("the node refused our certificate"), "{text}");
    assert!(text.contains("unknown CA"), "{text}");

    let accepted = tokio::time::timeout(Duration::from_millis(500), node.accept()).await;
    assert!(accepted.is_err(), "the node must not yield that connection");
    let logged = log.text();
    eprintln!("{logged}");
    assert!(
        logged.contains("refused a connection from 127.0.0.1:")
            && logged.contains("the peer's certificate is not signed by this cluster's CA"),
        "{logged}"
    );

    // `load` catches the mix-up before any connection.
    let mixed_dir = tempfile::tempdir()?;
    std::fs::copy(
        dir.path().join(CA_CERT_FILE),
        mixed_dir.path().join(CA_CERT_FILE),
    )?;
    for f in [NODE_CERT_FILE, NODE_KEY_FILE] {
        std::fs::copy(other_dir.path().join(f), mixed_dir.path().join(f))?;
    }
    let err = ClusterTls::load(mixed_dir.path()).expect_err("mixed files");
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(
        text.contains("node.pem") && text.contains("wallaroo cert init"),
        "{text}"
    );
    Ok(())
}

/// A QUIC client (plain quinn) that trusts the cluster's CA but presents no certificate.
#[tokio::test]
async fn node_refuses_a_client_without_certificate() -> anyhow::Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let log = Log::default();
    let _guard = log.install();
    let (dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(
        dir.path().join(CA_CERT_FILE),
    )?)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![wallaroo_transport::tls::ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(config)?,
    ));
    let mut anonymous = quinn::Endpoint::client(localhost())?;
    anonymous.set_default_client_config(config);
    // Our side of the handshake may complete; the refusal arrives right after.
    let refused = match anonymous
        .connect(addr, wallaroo_transport::tls::SERVER_NAME)?
        .await
    {
        Err(e) => e,
        Ok(conn) => conn
            .accept_uni()
            .await
            .expect_err("no greeting for an anonymous client"),
    };
    eprintln!("{refused}");

    let accepted = tokio::time::timeout(Duration::from_millis(500), node.accept()).await;
    assert!(accepted.is_err(), "the node must not yield that connection");
    let logged = log.text();
    eprintln!("{logged}");
    assert!(
        logged.contains("refused a connection from 127.0.0.1:")
            && logged.contains("the peer presented no certificate"),
        "{logged}"
    );
    Ok(())
}

#[tokio::test]
async fn client_refuses_a_node_of_another_ca() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let (_other_dir, impostor_tls) = cluster();
    let impostor = Endpoint::bind(localhost(), &impostor_tls)?;
    let addr = impostor.local_addr()?;

    let client = Endpoint::client(&tls)?;
    let err = client
        .connect(addr)
        .await
        .expect_err("the client must refuse the impostor");
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(
        text.contains(&format!(
            "cannot connect to {addr}: the node's certificate is not signed by this cluster's CA (unknown issuer)"
        )),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn connect_to_nobody_times_out_with_a_reason() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    // A bound but silent UDP socket: nothing answers.
    let silent = std::net::UdpSocket::bind(localhost())?;
    let addr = silent.local_addr()?;
    let client = Endpoint::client(&tls)?;
    let started = std::time::Instant::now();
    let err = client.connect(addr).await.expect_err("nobody there");
    assert!(started.elapsed() < Duration::from_secs(8));
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(
        text.contains(&addr.to_string()) && text.contains("no answer"),
        "{text}"
    );
    Ok(())
}

/// A node and a connection to it whose first stream the node hands to the test.
async fn raw_pair(
    tls: &ClusterTls,
) -> anyhow::Result<(
    Endpoint,
    Endpoint,
    wallaroo_transport::FrameSender<Msg>,
    tokio::task::JoinHandle<anyhow::Result<wallaroo_transport::FrameReceiver<Msg>>>,
)> {
    let node = Endpoint::bind(localhost(), tls)?;
    let addr = node.local_addr()?;
    let server = tokio::spawn({
        let node = node.clone();
        async move {
            let conn = node.accept().await.expect("a connection");
            let (_tx, rx) = conn.accept::<Msg, Msg>().await?.expect("a stream");
            Ok(rx)
        }
    });
    let client = Endpoint::client(tls)?;
    let conn = client.connect(addr).await?;
    let (tx, _rx) = conn.open::<Msg, Msg>().await?;
    Ok((node, client, tx, server))
}

#[tokio::test]
async fn oversized_frame_is_an_error_not_a_panic() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let (_node, _client, mut tx, server) = raw_pair(&tls).await?;
    tx.send_raw(&u32::MAX.to_be_bytes()).await?;
    let mut rx = server.await??;
    let err = rx.recv().await.expect_err("a huge length");
    let text = format!("{err:#}");
    assert!(
        text.contains("127.0.0.1:")
            && text.contains(&format!("{} bytes", u32::MAX))
            && text.contains(&format!("limit of {MAX_FRAME}")),
        "{text}"
    );
    assert!(rx.recv().await.is_err(), "the stream stays unusable");
    Ok(())
}

/// A `recv` dropped in the middle of a frame (as in a `select!` whose other branch fired)
/// loses nothing: the next `recv` returns that frame whole, then the next.
#[tokio::test]
async fn a_receive_dropped_halfway_through_a_frame_loses_nothing() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let (_node, _client, mut tx, server) = raw_pair(&tls).await?;
    let first = Msg::Hello {
        name: "x".repeat(300),
    };
    let body = rmp_serde::to_vec(&first)?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(&body);
    tx.send_raw(&frame[..2]).await?;
    let mut rx = server.await??;
    let wait = Duration::from_millis(100);
    assert!(
        tokio::time::timeout(wait, rx.recv()).await.is_err(),
        "half a header"
    );
    tx.send_raw(&frame[2..100]).await?;
    assert!(
        tokio::time::timeout(wait, rx.recv()).await.is_err(),
        "part of a body"
    );
    tx.send_raw(&frame[100..]).await?;
    tx.send(&Msg::Ack { seq: 1, bytes: 2 }).await?;
    assert_eq!(rx.recv().await?, Some(first));
    assert_eq!(rx.recv().await?, Some(Msg::Ack { seq: 1, bytes: 2 }));
    Ok(())
}

#[tokio::test]
async fn undecodable_frame_is_an_error_and_the_next_frame_still_reads() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let (_node, _client, mut tx, server) = raw_pair(&tls).await?;
    // 0xc1 is never used in MessagePack.
    let mut garbage = 3u32.to_be_bytes().to_vec();
    garbage.extend([0xc1, 0xc1, 0xc1]);
    tx.send_raw(&garbage).await?;
    tx.send(&Msg::Ack { seq: 1, bytes: 2 }).await?;
    // A frame that claims more than the stream holds.
    let mut short = 10u32.to_be_bytes().to_vec();
    short.extend([1, 2, 3]);
    tx.send_raw(&short).await?;
    tx.finish().await?;

    let mut rx = server.await??;
    let err = rx.recv().await.expect_err("garbage");
    let text = format!("{err:#}");
    assert!(
        text.contains("127.0.0.1:") && text.contains("does not decode"),
        "{text}"
    );
    assert_eq!(rx.recv().await?, Some(Msg::Ack { seq: 1, bytes: 2 }));
    let err = rx.recv().await.expect_err("cut short");
    let text = format!("{err:#}");
    assert!(text.contains("inside a frame (3 of 10 bytes)"), "{text}");
    Ok(())
}

#[tokio::test]
async fn wrong_message_type_is_a_decode_error() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;
    let server = tokio::spawn({
        let node = node.clone();
        async move {
            let conn = node.accept().await.expect("a connection");
            let (_tx, mut rx) = conn.accept::<(), Msg>().await?.expect("a stream");
            rx.recv().await
        }
    });
    let client = Endpoint::client(&tls)?;
    let conn = client.connect(addr).await?;
    let (mut tx, _rx) = conn.open::<Vec<String>, ()>().await?;
    tx.send(&vec!["not".to_string(), "a msg".to_string()])
        .await?;
    let err = server.await?.expect_err("a Vec<String> is no Msg");
    assert!(format!("{err:#}").contains("does not decode as"), "{err:#}");
    Ok(())
}

#[tokio::test]
async fn closing_a_connection_ends_accept_cleanly() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let addr = node.local_addr()?;
    let client = Endpoint::client(&tls)?;
    let conn = client.connect(addr).await?;
    let server_conn = node.accept().await.expect("a connection");
    conn.close("bye");
    assert!(server_conn.accept::<Msg, Msg>().await?.is_none());
    assert!(
        server_conn
            .closed()
            .await
            .contains("closed by the peer: bye")
    );
    Ok(())
}

/// A client that sends a request, finishes the stream and closes at once (a `stop`, say):
/// the node still gets the connection and reads the request.
#[tokio::test]
async fn request_finished_then_closed_still_arrives() -> anyhow::Result<()> {
    let (_dir, tls) = cluster();
    let node = Endpoint::bind(localhost(), &tls)?;
    let client = Endpoint::client(&tls)?;
    let conn = client.connect(node.local_addr()?).await?;
    let (mut tx, _rx) = conn.open::<Msg, Msg>().await?;
    tx.send(&Msg::Hello {
        name: "stop".into(),
    })
    .await?;
    tx.finish().await?;
    conn.close("bye");
    client.wait_idle().await;

    let server_conn = node
        .accept()
        .await
        .expect("the connection, closed but readable");
    let (_tx, mut rx) = server_conn
        .accept::<Msg, Msg>()
        .await?
        .expect("the request stream");
    assert_eq!(
        rx.recv().await?,
        Some(Msg::Hello {
            name: "stop".into()
        })
    );
    assert_eq!(rx.recv().await?, None);
    assert!(server_conn.accept::<Msg, Msg>().await?.is_none());
    Ok(())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_certs_refuses_to_overwrite_and_keys_are_private() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    let files = init_certs(&certs, false)?;
    for f in [&files.ca, &files.ca_key, &files.cert, &files.key] {
        assert!(f.starts_with(&certs) && f.exists(), "{}", f.display());
    }
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&files.ca_key), 0o600);
    assert_eq!(mode(&certs), 0o700, "a new directory is private");
    let ca_before = std::fs::read(&files.ca)?;

    let err = init_certs(&certs, false).expect_err("must not overwrite");
    let text = format!("{err:#}");
    assert!(
        text.contains("already exist") && text.contains("--force"),
        "{text}"
    );
    assert_eq!(std::fs::read(&files.ca)?, ca_before, "untouched");

    // A key file left readable is made private again when replaced.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644))?;
    init_certs(&certs, true)?;
    assert_ne!(std::fs::read(&files.ca)?, ca_before, "a new CA");
    assert_eq!(mode(&files.key), 0o600);
    ClusterTls::load(&certs)?;
    Ok(())
}

/// Nodes with certificates of their own, issued by the cluster's CA, talk to each other and
/// to a member holding the certificate of `init`; one issued by another CA is refused.
#[tokio::test]
async fn issued_certificates_are_members_and_hold_no_ca_key() -> anyhow::Result<()> {
    let (dir, tls) = cluster();
    let a = dir.path().join("node-a");
    let files = issue_cert(dir.path(), &a, "node-a", false)?;
    assert!(
        !a.join(CA_KEY_FILE).exists(),
        "a member cannot sign certificates"
    );
    assert!(files.cert.exists() && files.ca.exists());
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&a), 0o700);
    let pem = std::fs::read_to_string(&files.cert)?;
    assert_ne!(pem, std::fs::read_to_string(dir.path().join("node.pem"))?);
    let b = dir.path().join("node-b");
    issue_cert(dir.path(), &b, "node-b", false)?;

    let node_a = Endpoint::bind(localhost(), &ClusterTls::load(&a)?)?;
    let addr = node_a.local_addr()?;
    echo_all(node_a.clone());
    for member in [ClusterTls::load(&b)?, tls] {
        let conn = Endpoint::client(&member)?.connect(addr).await?;
        exchange(&conn).await?;
    }

    let (other, _) = cluster();
    let stranger = other.path().join("stranger");
    issue_cert(other.path(), &stranger, "stranger", false)?;
    let err = Endpoint::client(&ClusterTls::load(&stranger)?)?
        .connect(addr)
        .await
        .expect_err("another CA's member must not connect");
    assert!(
        format!("{err:#}").contains("not signed by this cluster's CA"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn issue_cert_checks_its_name_its_ca_and_what_it_would_overwrite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    init_certs(dir.path(), false)?;
    let out = dir.path().join("n");
    for bad in ["", "a b", "../x", &"x".repeat(65)] {
        let err = issue_cert(dir.path(), &out, bad, false).expect_err(bad);
        assert!(
            format!("{err:#}").contains("is not a certificate name"),
            "{err:#}"
        );
    }
    assert!(!out.exists(), "nothing written for a bad name");

    issue_cert(dir.path(), &out, "n", false)?;
    let before = std::fs::read(out.join("node.pem"))?;
    let err = issue_cert(dir.path(), &out, "n", false).expect_err("must not overwrite");
    assert!(format!("{err:#}").contains("--force"), "{err:#}");
    assert_eq!(std::fs::read(out.join("node.pem"))?, before);
    issue_cert(dir.path(), &out, "n", true)?;
    assert_ne!(std::fs::read(out.join("node.pem"))?, before);

    // A directory without the CA's key (a member's) cannot issue.
    let err = issue_cert(&out, &dir.path().join("m"), "m", false).expect_err("no ca.key");
    assert!(format!("{err:#}").contains("ca.key"), "{err:#}");

    // A CA key that does not belong to ca.pem.
    let other = tempfile::tempdir()?;
    init_certs(other.path(), false)?;
    std::fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE))?;
    let err = issue_cert(dir.path(), &dir.path().join("k"), "k", false).expect_err("mixed CA");
    assert!(
        format!("{err:#}").contains("not the certificate and key of one cluster CA"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn load_names_the_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ClusterTls::load(dir.path()).expect_err("empty directory");
    let text = format!("{err:#}");
    assert!(
        text.contains(&dir.path().join("ca.pem").display().to_string())
            && text.contains(&format!("wallaroo cert init {}", dir.path().display())),
        "{text}"
    );

    init_certs(dir.path(), false).expect("init");
    std::fs::remove_file(dir.path().join("node.key")).expect("remove");
    let text = format!("{:#}", ClusterTls::load(dir.path()).expect_err("no key"));
    assert!(text.contains("node.key"), "{text}");

    std::fs::write(dir.path().join("node.key"), "not a key").expect("write");
    let text = format!("{:#}", ClusterTls::load(dir.path()).expect_err("bad key"));
    assert!(
        text.contains("node.key") && text.contains("no usable private key"),
        "{text}"
    );
}

#[test]
fn endpoint_outside_a_runtime_is_an_error() {
    let (_dir, tls) = cluster();
    let err = Endpoint::bind(localhost(), &tls).expect_err("no runtime");
    assert!(format!("{err:#}").contains("tokio runtime"));
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Endpoint>();
    check::<Connection>();
    check::<ClusterTls>();
    check::<wallaroo_transport::FrameSender<Msg>>();
    check::<wallaroo_transport::FrameReceiver<Msg>>();
}
