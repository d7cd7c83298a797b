//! The demo: both services, the outbox relay and the replica worker in one process, on two
//! SQLite files in a temporary directory and the local RabbitMQ (or the in-memory transport
//! when no broker answers). See `cqrs_examples::demo`.
//!
//! `cargo run -p cqrs-examples --bin demo`; settings: `CQRS_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), `DEMO_IN_MEMORY=1` to skip the broker, and
//! `RUST_LOG` (default `warn`) for the services' logs on standard error.

use std::process::ExitCode;

use cqrs_examples::demo::{self, DemoOptions};
use cqrs_examples::init_tracing;

#[tokio::main]
async fn main() -> ExitCode {
    // The notice of the fallback says it when no broker answers: no need for each attempt.
    init_tracing("warn,cqrs_core::rabbitmq::connect=error");
    let options = DemoOptions::from_env();
    let mut stdout = std::io::stdout();
    match demo::run(&options, &mut stdout).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}
