//! `consume` and `relay`: the long-running parts of a service, as processes of their own.

use super::args::RelayArgs;
use super::{Cli, CliError, Report};
use crate::connection::CqrsConnection;
use crate::{ConsumerRuntime, OutboxRelay, RabbitMqTransport};

/// The replica worker until the shutdown signal; `workers` (consume's `--workers`) overrides
/// `CQRS_WORKERS`; `cqrs_ids` (consume's `--cqrs-id`), when not empty, limits the models
/// consumed.
pub(super) async fn consume<C: CqrsConnection>(
    cli: &Cli<C>,
    workers: Option<usize>,
    cqrs_ids: Vec<String>,
) -> Result<Report, CliError> {
    let Some(replicas) = cli.replicas() else {
        return Err(CliError::Invalid(
            "consume: this service registers no replica model (Cli::replica or Cli::custom_replica)"
                .to_owned(),
        ));
    };
    let config = cli.config().clone();
    let transport = RabbitMqTransport::new(config.clone());
    let mut runtime =
        ConsumerRuntime::new(transport.clone(), config, replicas).only_cqrs_ids(cqrs_ids);
    if let Some(workers) = workers {
        runtime = runtime.workers(workers);
    }
    let stats = runtime.run_until(cli.shutdown()).await;
    // Before the command's runtime ends: the broker sees the connections closed, not cut.
    crate::Transport::close(&transport).await;
    let stats = stats.map_err(CliError::broker)?;
    Ok(Report {
        processed: stats.received,
        written: stats.applied(),
        skipped: stats.dead_lettered,
        summary: format!(
            "consume: stopped; {} message(s) received, {} applied, {} retried, {} dead-lettered",
            stats.received,
            stats.applied(),
            stats.retried,
            stats.dead_lettered
        ),
    })
}

pub(super) async fn relay<C: CqrsConnection>(
    cli: &Cli<C>,
    args: RelayArgs,
) -> Result<Report, CliError> {
    let connect = cli.connect();
    let transport = RabbitMqTransport::new(cli.config().clone());
    let mut relay = OutboxRelay::new(transport.clone(), move || connect());
    if args.drain {
        let published = relay.drain().await;
        crate::Transport::close(&transport).await;
        let published = published.map_err(CliError::Runtime)? as u64;
        return Ok(Report {
            processed: published,
            written: published,
            skipped: 0,
            summary: format!("relay: {published} outbox message(s) published; the outbox is empty"),
        });
    }
    let stats = relay.run_until(cli.shutdown()).await;
    crate::Transport::close(&transport).await;
    Ok(Report {
        processed: stats.published,
        written: stats.published,
        skipped: stats.unroutable,
        summary: format!(
            "relay: stopped; {} message(s) published ({} unroutable), {} error(s) retried",
            stats.published, stats.unroutable, stats.errors
        ),
    })
}
