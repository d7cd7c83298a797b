//! Writes go on while the broker is unreachable; the entries wait in the outbox and arrive
//! once each, in per-row revision order, when a relay can reach the broker again.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use cqrs_diesel::{Config, MasterModel, OutboxRelay, RabbitMqTransport};

use super::models::PgAuthor;
use super::{Author, Setup};
use crate::db::{PgDb, TestDb};

const ROWS: i32 = 1000;
const SAVES_PER_ROW: i32 = 10;
const WRITERS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_saves_during_an_outage_arrive_once_in_order() {
    let mut setup = Setup::new::<PgAuthor>(PgDb::new("outage")).await;

    // A relay whose broker is a closed port: it keeps trying and deletes nothing.
    let dead = Config::builder()
        .amqp_url("amqp://guest:guest@127.0.0.1:1/%2f")
        .exchange(setup.config.exchange())
        .connect_timeout(Duration::from_millis(300))
        .reconnect_min_delay(Duration::from_millis(50))
        .reconnect_max_delay(Duration::from_millis(200))
        .build()
        .unwrap();
    let dead_relay = OutboxRelay::new(RabbitMqTransport::new(dead), setup.db.connector())
        .poll_interval(Duration::from_millis(100))
        .spawn();

    // Several writers, each saving its own rows again and again.
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let connector = setup.db.connector();
            std::thread::spawn(move || {
                let mut conn = connector().unwrap();
                let mine: Vec<i32> = (1..=ROWS).filter(|id| id % WRITERS == writer).collect();
                let mut rows: HashMap<i32, PgAuthor> = HashMap::new();
                for round in 0..SAVES_PER_ROW {
                    for &id in &mine {
                        let mut row = rows.remove(&id).unwrap_or_else(|| {
                            PgAuthor::new(
                                id,
                                "new",
                                None,
                                None,
                                Utc::now(),
                                true,
                                0.0,
                                uuid::Uuid::new_v4(),
                                None,
                            )
                        });
                        row.set_name(&format!("round {round}"));
                        let stored = row.save_and_publish(&mut conn).unwrap();
                        assert_eq!(stored.revision(), round);
                        rows.insert(id, stored);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let total = (ROWS * SAVES_PER_ROW) as i64;
    assert_eq!(setup.outbox_len(), total, "every save waits in the outbox");
    let stats = dead_relay.shutdown().await;
    assert_eq!(stats.published, 0, "nothing was confirmed by a closed port");
    assert_eq!(setup.outbox_len(), total, "and nothing was deleted");

    // The broker is back (a relay that reaches it): everything arrives.
    let relay = OutboxRelay::new(setup.transport.clone(), setup.db.connector()).spawn();
    let got = setup
        .capture
        .take(total as usize, Duration::from_secs(120))
        .await;
    assert!(
        setup.capture.is_quiet_for(Duration::from_millis(500)).await,
        "no message arrives twice"
    );
    let stats = relay.shutdown().await;
    assert_eq!(stats.published, total as u64);
    assert_eq!(setup.outbox_len(), 0);

    let mut revisions: HashMap<i64, Vec<i64>> = HashMap::new();
    for (_, body) in &got {
        let pk = body["instance_pk"].as_i64().unwrap();
        let revision = body["instance_data"]["cqrs_revision"].as_i64().unwrap();
        revisions.entry(pk).or_default().push(revision);
    }
    assert_eq!(revisions.len(), ROWS as usize);
    let expected: Vec<i64> = (0..SAVES_PER_ROW as i64).collect();
    for (pk, seen) in &revisions {
        assert_eq!(seen, &expected, "row {pk}: every revision once, in order");
    }
}
