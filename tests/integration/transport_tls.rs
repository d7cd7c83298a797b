//! `amqps://` through a TLS-terminating proxy in front of the local broker, with a private CA
//! generated for the test: the broker itself has no TLS listener on this machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_diesel::transport::{AmqpUrl, Consumer, OutgoingMessage};
use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport, TransportError as Error};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{amqp_url, cleanup, unique};

struct TlsProxy {
    port: u16,
    ca_file: std::path::PathBuf,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// A CA, a certificate for `localhost` signed by it, and a proxy that terminates TLS with that
/// certificate and forwards the bytes to the broker.
async fn start_tls_proxy() -> TlsProxy {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();

    let ca_file = std::env::temp_dir().join(format!("{}.pem", unique("cqrs_test_ca")));
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let broker = AmqpUrl::parse(&amqp_url()).unwrap();
    let upstream = format!("{}:{}", broker.host(), broker.port());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handshakes);
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, upstream, counter) =
                (acceptor.clone(), upstream.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut broker) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                }
            });
        }
    });
    TlsProxy {
        port,
        ca_file,
        handshakes,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_publishes_and_consumes_over_tls() {
    let proxy = start_tls_proxy().await;
    let config = Config::builder()
        .amqp_url(&format!("amqps://guest:guest@localhost:{}/%2f", proxy.port))
        .tls_ca_file(&proxy.ca_file)
        .exchange(unique("tls_x"))
        .queue(unique("tls_q"))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let transport = RabbitMqTransport::new(config.clone());
    transport
        .declare(&Topology::from_config(&config, ["author"]))
        .await
        .expect("declared over TLS");
    transport
        .publish_confirmed(&OutgoingMessage::new("author", "over tls"))
        .await
        .expect("confirmed over TLS");
    let mut consumer = transport.consume(config.queue().unwrap(), 5).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery")
        .expect("consumer open")
        .expect("no error");
    assert_eq!(delivery.body(), b"over tls");
    delivery.ack().await.unwrap();
    assert!(
        proxy.handshakes.load(Ordering::SeqCst) >= 2,
        "publisher and consumer connections both went through TLS"
    );
    drop(consumer);
    transport.close().await;
    cleanup(
        config.exchange(),
        &[config.queue().unwrap(), config.dead_letter_queue().unwrap()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_refuses_a_certificate_from_an_unknown_ca() {
    let proxy = start_tls_proxy().await;
    let config = Config::builder()
        .amqp_url(&format!("amqps://guest:guest@localhost:{}/%2f", proxy.port))
        // Generous: a loaded machine may answer slowly; the refusal comes from the first
        // handshake and is the reason reported whenever the deadline ends the attempts.
        .connect_timeout(Duration::from_secs(5))
        .reconnect_min_delay(Duration::from_millis(200))
        .reconnect_max_delay(Duration::from_millis(1000))
        .build()
        .unwrap();
    let transport = RabbitMqTransport::new(config);
    let result = transport
        .publish_confirmed(&OutgoingMessage::new("author", "x"))
        .await;
    match result {
        Err(Error::Connect { reason, .. }) => {
            assert!(
                reason.to_lowercase().contains("certificate") || reason.contains("UnknownIssuer"),
                "the reason names the certificate problem: {reason}"
            );
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(
        proxy.handshakes.load(Ordering::SeqCst),
        0,
        "no TLS session was established"
    );
    transport.close().await;
}
