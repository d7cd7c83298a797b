//! A mapped replica with its own retry policy, on each backend: field mapping, only-direct
//! SYNCs, a poison message retried exactly `max_retries` times then dead-lettered, and bodies
//! that cannot be applied (not JSON, a missing column, a wrong type, an unknown cqrs_id,
//! expired) dead-lettered at once with their reason.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::{ReplicaModel, ReplicaStore, Replicas, Transport};
use serde_json::{Value, json};

use super::{Worker, author, dead_letters};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

mod pg_card {
    diesel::table! {
        author_card (id) {
            id -> Integer,
            title -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

mod mysql_card {
    diesel::table! {
        author_card (id) {
            id -> Integer,
            title -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> Datetime,
        }
    }
}

mod sqlite_card {
    diesel::table! {
        author_card (id) {
            id -> Integer,
            title -> Text,
            cqrs_revision -> Integer,
            cqrs_updated -> TimestamptzSqlite,
        }
    }
}

/// `author` seen as a card: only the name (as `title`), two retries 50 ms apart, and only the
/// SYNCs aimed at this service.
#[derive(Debug, Clone, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = pg_card::author_card, only_direct_syncs, max_retries = 2, retry_delay = "50ms", backends(postgres))]
struct PgCard {
    id: i32,
    #[cqrs(from = "name")]
    title: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

#[derive(Debug, Clone, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = mysql_card::author_card, only_direct_syncs, max_retries = 2, retry_delay = "50ms", backends(mysql))]
struct MysqlCard {
    id: i32,
    #[cqrs(from = "name")]
    title: String,
    cqrs_revision: i32,
    cqrs_updated: NaiveDateTime,
}

#[derive(Debug, Clone, ReplicaModel, diesel::Queryable)]
#[cqrs(id = "author", table = sqlite_card::author_card, only_direct_syncs, max_retries = 2, retry_delay = "50ms", backends(sqlite))]
struct SqliteCard {
    id: i32,
    #[cqrs(from = "name")]
    title: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

trait Card: Send + Sync + Sized + 'static {
    const DDL: &'static str;
    type Conn: cqrs_diesel::CqrsConnection;
    fn titles(conn: &mut Self::Conn) -> Vec<(i32, String)>;
}

macro_rules! card {
    ($ty:ty, $schema:ident, $conn:ty, $timestamp:literal) => {
        impl Card for $ty {
            const DDL: &'static str = concat!(
                "CREATE TABLE author_card (id INTEGER PRIMARY KEY, ",
                "title VARCHAR(255) NOT NULL CHECK (title <> 'poison'), ",
                "cqrs_revision INTEGER NOT NULL, cqrs_updated ",
                $timestamp,
                " NOT NULL)"
            );
            type Conn = $conn;
            fn titles(conn: &mut $conn) -> Vec<(i32, String)> {
                use diesel::prelude::*;
                $schema::author_card::table
                    .order($schema::author_card::id)
                    .load::<$ty>(conn)
                    .expect("load cards")
                    .into_iter()
                    .map(|card| (card.id, card.title))
                    .collect()
            }
        }
    };
}

card!(PgCard, pg_card, diesel::PgConnection, "TIMESTAMPTZ");
card!(
    MysqlCard,
    mysql_card,
    diesel::MysqlConnection,
    "DATETIME(6)"
);
card!(SqliteCard, sqlite_card, diesel::SqliteConnection, "TEXT");

async fn mapping_policy_and_dead_letters<D, M>(db: D)
where
    D: TestDb,
    M: Card<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let replicas = Replicas::new(db.connector()).register::<M>();
    let worker = Worker::start(db, M::DDL, replicas).await;

    // Mapping: `name` lands in `title`; the master's other keys are ignored.
    worker.broadcast(&author("SAVE", 1, "Mapped", 0)).await;
    // Only direct SYNCs: a broadcast SYNC is ignored, a direct one applied.
    worker
        .broadcast(&author("SYNC", 1, "broadcast-sync", 5))
        .await;
    worker.wait_settled(2).await;
    worker.direct(&author("SYNC", 1, "direct-sync", 6)).await;
    // A poison message (the CHECK constraint refuses it) beside good ones.
    worker.broadcast(&author("SAVE", 2, "poison", 0)).await;
    worker.broadcast(&author("SAVE", 3, "good", 0)).await;
    // Bodies that cannot be applied.
    let mut missing = author("SAVE", 4, "x", 0);
    if let Some(data) = missing["instance_data"].as_object_mut() {
        data.remove("name");
    }
    worker.broadcast(&missing).await;
    let mut wrong_type = author("SAVE", 5, "x", 0);
    wrong_type["instance_data"]["name"] = json!(42);
    worker.broadcast(&wrong_type).await;
    let mut unknown = author("SAVE", 6, "x", 0);
    unknown["cqrs_id"] = json!("nobody");
    worker.publish("author", &unknown).await;
    let mut expired = author("SAVE", 7, "x", 0);
    expired["expires"] = json!("2020-01-01T00:00:00+00:00");
    worker.broadcast(&expired).await;
    worker
        .transport
        .publish_confirmed(&cqrs_diesel::transport::OutgoingMessage::new(
            "author",
            b"{not json".to_vec(),
        ))
        .await
        .expect("publish");

    let stats = worker
        .wait("the poison message dead-lettered", |s| s.dead_lettered >= 6)
        .await;
    assert_eq!(
        stats.retried, 2,
        "retried exactly max_retries times: {stats:?}"
    );
    assert_eq!(stats.ignored, 1, "the broadcast SYNC: {stats:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(worker.stats().dead_lettered, 6);

    let titles = M::titles(&mut worker.db.connect());
    assert_eq!(
        titles,
        vec![(1, "direct-sync".to_owned()), (3, "good".to_owned())]
    );

    let dead = dead_letters(worker.config.dead_letter_queue().expect("dlq")).await;
    assert_eq!(dead.len(), 6, "{dead:#?}");
    let reason_of = |needle: &str| {
        dead.iter()
            .find(|(body, _)| body.contains(needle))
            .map(|(body, reason)| (body.clone(), reason.clone()))
            .unwrap_or_else(|| panic!("no dead letter with {needle}: {dead:#?}"))
    };
    let (poison, reason) = reason_of("\"poison\"");
    let poison: Value = serde_json::from_str(&poison).expect("JSON");
    assert_eq!(poison["retries"], 2, "the body as last retried");
    assert!(reason.contains("retries"), "{reason}");
    let (_, reason) = reason_of("\"instance_pk\":4");
    assert!(reason.contains("name"), "missing key: {reason}");
    let (_, reason) = reason_of("\"instance_pk\":5");
    assert!(reason.contains("name"), "wrong type: {reason}");
    let (_, reason) = reason_of("nobody");
    assert!(reason.contains("nobody"), "unknown cqrs_id: {reason}");
    let (_, reason) = reason_of("\"instance_pk\":7");
    assert!(reason.contains("expire"), "expired: {reason}");
    let (_, reason) = reason_of("{not json");
    assert!(reason.to_lowercase().contains("json"), "not JSON: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_policy_and_dead_letters_on_postgres() {
    mapping_policy_and_dead_letters::<_, PgCard>(PgDb::new("rf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_policy_and_dead_letters_on_mariadb() {
    mapping_policy_and_dead_letters::<_, MysqlCard>(MysqlDb::new("rf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_policy_and_dead_letters_on_sqlite() {
    mapping_policy_and_dead_letters::<_, SqliteCard>(SqliteDb::new("rf")).await;
}

#[test]
fn the_policy_comes_from_the_attributes() {
    let policy = PgCard::cqrs_policy();
    assert_eq!(policy.max_retries, Some(Some(2)));
    assert_eq!(policy.retry_delay, Some(Duration::from_millis(50)));
    assert!(policy.only_direct_syncs);
}

/// A MariaDB server whose default SQL mode is permissive truncates a too-long text without an
/// error; the worker's sessions run in strict mode whatever the default, so the message fails
/// (and is dead-lettered with the database's reason) and the good message beside it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_too_long_for_a_mariadb_column_is_dead_lettered_not_truncated() {
    use cqrs_diesel::diesel::connection::SimpleConnection;
    use cqrs_diesel::diesel::{Connection, ConnectionError, MysqlConnection};

    use super::models::{AuthorRow, MysqlAuthorReplica};

    let db = MysqlDb::new("rstrict");
    let url = db.url();
    let permissive = move || -> Result<MysqlConnection, ConnectionError> {
        let mut conn = MysqlConnection::establish(&url)?;
        conn.batch_execute("SET SESSION sql_mode = ''")
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    };
    let replicas = Replicas::new(permissive).register::<MysqlAuthorReplica>();
    let worker = Worker::start_with(db, MysqlAuthorReplica::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    let mut long = author("SAVE", 1, "long", 0);
    long["instance_data"]["bio"] = json!("x".repeat(70_000)); // TEXT holds 65,535 bytes
    worker.broadcast(&long).await;
    worker.broadcast(&author("SAVE", 2, "good", 0)).await;
    let stats = worker
        .wait("both settled", |s| s.dead_lettered + s.applied() >= 2)
        .await;
    assert_eq!((stats.created, stats.dead_lettered), (1, 1), "{stats:?}");
    let ids: Vec<i32> = MysqlAuthorReplica::load_all(&mut worker.db.connect())
        .iter()
        .map(|row| row.id())
        .collect();
    assert_eq!(ids, [2], "nothing truncated was stored");
    let dead = dead_letters(worker.config.dead_letter_queue().expect("dlq")).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1.contains("Data too long"), "{}", dead[0].1);
}

/// A body larger than `CQRS_MAX_BODY_SIZE` (1 MiB by default) is dead-lettered unread, with
/// the reason; the good messages around it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_size_limit_is_dead_lettered_unread() {
    use super::models::{AuthorRow, SqliteAuthorReplica};

    let db = SqliteDb::new("rsize");
    let replicas = Replicas::new(db.connector()).register::<SqliteAuthorReplica>();
    let worker = Worker::start(db, SqliteAuthorReplica::DDL, replicas).await;
    assert_eq!(worker.config.max_body_size(), 1024 * 1024);
    let mut huge = author("SAVE", 2, "huge", 0);
    huge["instance_data"]["bio"] = json!("x".repeat(2 * 1024 * 1024));
    worker.broadcast(&author("SAVE", 1, "before", 0)).await;
    worker.broadcast(&huge).await;
    worker.broadcast(&author("SAVE", 3, "after", 0)).await;
    let stats = worker
        .wait("all settled", |s| s.dead_lettered + s.applied() >= 3)
        .await;
    assert_eq!((stats.created, stats.dead_lettered), (2, 1), "{stats:?}");
    let ids: Vec<i32> = SqliteAuthorReplica::load_all(&mut worker.db.connect())
        .iter()
        .map(|row| row.id())
        .collect();
    assert_eq!(ids, [1, 3]);
    let dead = dead_letters(worker.config.dead_letter_queue().expect("dlq")).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].0.len(),
        huge.to_string().len(),
        "the body kept whole"
    );
    assert!(dead[0].1.contains("CQRS_MAX_BODY_SIZE"), "{}", dead[0].1);
}

/// A transaction that loses a lock conflict (here MariaDB's lock wait timeout, behind another
/// transaction holding the row's state) is tried again without spending the message's retries:
/// with `max_retries = 0`, the message is applied once the lock is released, not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_conflict_is_retried_without_spending_the_message_retries() {
    use cqrs_diesel::diesel::connection::SimpleConnection;
    use cqrs_diesel::diesel::{Connection, ConnectionError, MysqlConnection};

    use super::models::{AuthorRow, MysqlAuthorReplica};

    let db = MysqlDb::new("rlock");
    let url = db.url();
    let impatient = {
        let url = url.clone();
        move || -> Result<MysqlConnection, ConnectionError> {
            let mut conn = MysqlConnection::establish(&url)?;
            conn.batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    };
    let replicas = Replicas::new(impatient).register::<MysqlAuthorReplica>();
    let worker = Worker::start_with(db, MysqlAuthorReplica::DDL, replicas, |b| {
        b.max_retries(Some(0))
    })
    .await;
    // Another transaction holds the state row of author 1 until told to let go.
    let (holder, release_tx) =
        super::lock_author_state(move || MysqlConnection::establish(&url).expect("connect"));
    worker
        .broadcast(&author("SAVE", 1, "after the lock", 0))
        .await;
    worker
        .wait("a conflict retried", |s| s.conflict_retries >= 1)
        .await;
    release_tx.send(()).expect("release the lock");
    holder.join().expect("the holder ends");
    let stats = worker
        .wait("the message applied", |s| s.applied() >= 1)
        .await;
    assert_eq!(
        (stats.created, stats.retried, stats.dead_lettered),
        (1, 0, 0),
        "{stats:?}"
    );
    let names: Vec<String> = MysqlAuthorReplica::load_all(&mut worker.db.connect())
        .iter()
        .map(|row| row.name().to_owned())
        .collect();
    assert_eq!(names, ["after the lock"]);
}

/// The report: after one 2 MiB SAVE in the stream, a MariaDB replica stored the next rows with
/// zeros and zero dates and counted them as applied. With a limit high enough to let the body
/// in, the oversized row fails alone (its text does not fit the column), and every row after it
/// is stored exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_mib_save_does_not_corrupt_the_rows_after_it_on_mariadb() {
    use super::models::{AuthorRow, MysqlAuthorReplica};

    let db = MysqlDb::new("rbig");
    let replicas = Replicas::new(db.connector()).register::<MysqlAuthorReplica>();
    let worker = Worker::start_with(db, MysqlAuthorReplica::DDL, replicas, |b| {
        b.max_retries(Some(0)).max_body_size(8 * 1024 * 1024)
    })
    .await;
    let mut huge = author("SAVE", 1, "huge", 0);
    huge["instance_data"]["bio"] = json!("x".repeat(2 * 1024 * 1024));
    worker.broadcast(&huge).await;
    let mut sent = Vec::new();
    for id in 2..=301i64 {
        let mut body = author("SAVE", id, &format!("row {id}"), 0);
        body["instance_data"]["score"] = json!(id as f64 + 0.25);
        body["instance_data"]["birth_date"] = json!("1990-05-17");
        worker.broadcast(&body).await;
        sent.push(body);
    }
    let stats = worker
        .wait("all settled", |s| s.dead_lettered + s.applied() >= 301)
        .await;
    assert_eq!((stats.created, stats.dead_lettered), (300, 1), "{stats:?}");
    let rows = MysqlAuthorReplica::load_all(&mut worker.db.connect());
    assert_eq!(rows.len(), 300);
    for (row, body) in rows.iter().zip(&sent) {
        let mut expected = body["instance_data"].clone();
        if let Some(data) = expected.as_object_mut() {
            data.remove("cqrs_updated");
            data.remove("unknown_master_field");
        }
        assert_eq!(row.wire_fields(), expected, "row {}", row.id());
    }
}
