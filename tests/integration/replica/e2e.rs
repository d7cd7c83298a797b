//! End to end: the master side on PostgreSQL -> outbox relay -> broker (RabbitMQ, NATS
//! JetStream: one generic body) -> replica workers on MariaDB and on SQLite. After 20,000 mixed writes (creates, updates, deletes, bulk creates
//! and bulk updates, from several writers) both replicas equal the master row for row.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use cqrs_diesel::{Config, CqrsConnection, MasterModel, OutboxRelay, Replicas};
use diesel::prelude::*;

use super::Worker;
use super::models::{AuthorRow, MysqlAuthorReplica, SqliteAuthorReplica, pg_schema};
use crate::brokers::{Broker, broker_tests};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::master::Author;
use crate::master::models::PgAuthor;
use crate::support::unique;

const WRITES: usize = 20_000;
const WRITERS: usize = 4;

/// (name, active, revision) by id.
type Rows = BTreeMap<i32, (String, bool, i64)>;

fn master_rows(db: &PgDb) -> Rows {
    use pg_schema::author::dsl;
    dsl::author
        .select((dsl::id, dsl::name, dsl::active, dsl::cqrs_revision))
        .load::<(i32, String, bool, i32)>(&mut db.connect())
        .expect("load the master rows")
        .into_iter()
        .map(|(id, name, active, revision)| (id, (name, active, i64::from(revision))))
        .collect()
}

fn replica_rows<D: TestDb, M: AuthorRow<Conn = D::Conn>>(db: &D) -> Rows {
    M::load_all(&mut db.connect())
        .into_iter()
        .map(|row| {
            let fields = row.wire_fields();
            (
                row.id(),
                (
                    row.name().to_owned(),
                    fields["active"].as_bool().unwrap_or_default(),
                    i64::from(row.revision()),
                ),
            )
        })
        .collect()
}

fn new_author(id: i32, name: String) -> PgAuthor {
    PgAuthor::new(
        id,
        &name,
        Some("someone@example.com"),
        None,
        Utc::now(),
        true,
        1.0,
        uuid::Uuid::new_v4(),
        None,
    )
}

/// One writer's share: its own ids (`id % WRITERS == writer`), a random mix of operations,
/// until it has produced `quota` messages.
fn write_mix(conn: &mut PgConnection, writer: usize, quota: usize) {
    let mut rng = fastrand::Rng::with_seed(writer as u64 + 7);
    let mut live: Vec<PgAuthor> = Vec::new();
    let mut next_id = writer as i32 + WRITERS as i32;
    let fresh = |next_id: &mut i32| {
        let id = *next_id;
        *next_id += WRITERS as i32;
        id
    };
    // A bulk create to start with.
    let rows: Vec<PgAuthor> = (0..200)
        .map(|n| new_author(fresh(&mut next_id), format!("w{writer} bulk {n}")))
        .collect();
    live.extend(PgAuthor::bulk_create_and_publish(conn, &rows).expect("bulk create"));
    let mut produced = rows.len();
    let mut step = 0;
    while produced < quota {
        step += 1;
        let roll = rng.u8(0..100);
        if live.is_empty() || roll < 8 {
            let row = new_author(fresh(&mut next_id), format!("w{writer} new {step}"));
            live.push(row.save_and_publish(conn).expect("create"));
            produced += 1;
        } else if roll < 16 {
            let row = live.swap_remove(rng.usize(..live.len()));
            assert!(row.delete_and_publish(conn).expect("delete"));
            produced += 1;
        } else if roll < 22 && live.len() >= 20 {
            let start = rng.usize(..=live.len() - 20);
            let mut batch: Vec<PgAuthor> = live[start..start + 20].to_vec();
            for row in &mut batch {
                row.set_name(&format!("w{writer} bulk {step}"));
                row.set_active(rng.bool());
            }
            let stored = PgAuthor::bulk_update_and_publish(conn, &batch).expect("bulk update");
            produced += stored.len();
            live.splice(start..start + 20, stored);
        } else {
            let index = rng.usize(..live.len());
            let mut row = live[index].clone();
            row.set_name(&format!("w{writer} step {step}"));
            row.set_active(rng.bool());
            live[index] = row.save_and_publish(conn).expect("update");
            produced += 1;
        }
    }
}

broker_tests!(twenty_thousand_writes_replicate_to_mariadb_and_sqlite);

async fn twenty_thousand_writes_replicate_to_mariadb_and_sqlite<B: Broker>() {
    let exchange = unique("e2e_x");
    let master = PgDb::new("e2e_master");
    master.execute(<PgAuthor as Author>::DDL);
    master
        .connect()
        .run_outbox_migrations()
        .expect("outbox migration");

    let mariadb = MysqlDb::new("e2e_mariadb");
    let replicas = Replicas::new(mariadb.connector()).register::<MysqlAuthorReplica>();
    let exchange_for = exchange.clone();
    let to_mariadb = Worker::<_, B>::start_on(
        mariadb,
        <MysqlAuthorReplica as AuthorRow>::DDL,
        replicas,
        move |builder| builder.exchange(exchange_for),
    )
    .await;
    let sqlite = SqliteDb::new("e2e_sqlite");
    let replicas = Replicas::new(sqlite.connector()).register::<SqliteAuthorReplica>();
    let exchange_for = exchange.clone();
    let to_sqlite = Worker::<_, B>::start_on(
        sqlite,
        <SqliteAuthorReplica as AuthorRow>::DDL,
        replicas,
        move |builder| builder.exchange(exchange_for),
    )
    .await;

    let config = Config::builder()
        .amqp_url(&crate::support::amqp_url())
        .exchange(exchange.clone())
        .build()
        .expect("config");
    let relay = OutboxRelay::new(B::transport(&config).await, master.connector()).spawn();

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let connect = master.connector();
            std::thread::spawn(move || {
                let mut conn = connect().expect("master connection");
                write_mix(&mut conn, writer, WRITES / WRITERS);
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }

    let expected = master_rows(&master);
    assert!(
        expected.len() > 500,
        "the mix left rows: {}",
        expected.len()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let at_mariadb = replica_rows::<_, MysqlAuthorReplica>(&to_mariadb.db);
        let at_sqlite = replica_rows::<_, SqliteAuthorReplica>(&to_sqlite.db);
        if at_mariadb == expected && at_sqlite == expected {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let differ = |rows: &Rows| {
                expected
                    .iter()
                    .filter(|(id, row)| rows.get(id) != Some(row))
                    .count()
                    + rows.keys().filter(|id| !expected.contains_key(id)).count()
            };
            panic!(
                "the replicas did not converge: {} rows differ on MariaDB, {} on SQLite \
                 (MariaDB {:?}, SQLite {:?})",
                differ(&at_mariadb),
                differ(&at_sqlite),
                to_mariadb.stats(),
                to_sqlite.stats()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let relayed = relay.shutdown().await;
    assert!(relayed.published as usize >= WRITES, "{relayed:?}");
    for stats in [to_mariadb.stats(), to_sqlite.stats()] {
        assert_eq!(stats.dead_lettered, 0, "{stats:?}");
        assert!(stats.received as usize >= WRITES, "{stats:?}");
    }
}
