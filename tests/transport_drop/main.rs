//! A service that ends without closing its RabbitMQ transport: it publishes with a transport
//! (and, with `consume` as its argument, consumes with it too; with `connecting`, other
//! transports are connecting at that moment), then drops its Tokio runtime
//! while the transport's connections are still open, then drops the transport. The
//! integration test `a_dropped_runtime_leaves_the_transport_quiet` runs it and checks that
//! nothing alarming (a panic of lapin's I/O thread) reaches its standard error.
//!
//! Input, from the environment: `CQRS_AMQP_URL`, `CQRS_EXCHANGE` and, to consume, `CQRS_QUEUE`
//! (`Config::from_env`).
//! Exits 0 after printing `published` on stdout; 1 with the reason on stderr.

use std::time::Duration;

use cqrs_diesel::transport::OutgoingMessage;
use cqrs_diesel::{Config, RabbitMqTransport, Topology, Transport};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let consume = mode == "consume";
    let connecting = mode == "connecting";
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => fail(&format!("no Tokio runtime: {error}")),
    };
    let transport = runtime.block_on(async {
        let config = Config::from_env().unwrap_or_else(|error| fail(&error.to_string()));
        let transport = RabbitMqTransport::new(config.clone());
        let topology = Topology::exchange_only(config.exchange());
        transport
            .declare(&topology)
            .await
            .unwrap_or_else(|error| fail(&error.to_string()));
        if consume {
            // A consumer whose task the runtime's drop cancels.
            transport
                .declare(&Topology::from_config(&config, ["dropped"]))
                .await
                .unwrap_or_else(|error| fail(&error.to_string()));
            let consumer = transport
                .consume(config.queue().unwrap_or("transport_drop"), 10)
                .await
                .unwrap_or_else(|error| fail(&error.to_string()));
            tokio::spawn(async move {
                let _consumer = consumer;
                std::future::pending::<()>().await;
            });
        }
        if connecting {
            // Transports still connecting when the runtime goes.
            for _ in 0..8 {
                let config = config.clone();
                tokio::spawn(async move {
                    loop {
                        let transport = RabbitMqTransport::new(config.clone());
                        let message = OutgoingMessage::new("dropped", b"{}".to_vec());
                        let _ = transport.publish_confirmed(&message).await;
                        transport.close().await;
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let message = OutgoingMessage::new("dropped", br#"{"signal_type":"SYNC"}"#.to_vec());
        // Unroutable without a queue: the broker's answer is all this needs.
        let _ = transport.publish_confirmed(&message).await;
        println!("published");
        transport
    });
    // The runtime goes first, with the transport's connections open, as a `main` returning
    // from `#[tokio::main]` with the transport in a global or a leaked task would do.
    let pause = Duration::from_millis(
        std::env::var("TRANSPORT_DROP_PAUSE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(500),
    );
    drop(runtime);
    std::thread::sleep(pause);
    drop(transport);
    std::thread::sleep(pause);
}

fn fail(reason: &str) -> ! {
    eprintln!("transport_drop: {reason}");
    std::process::exit(1)
}
