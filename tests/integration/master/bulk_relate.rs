//! `MasterHooks::relate_cqrs_serialization` (django-cqrs's `relate_cqrs_serialization`, as its
//! bulk operations and `bulk_relate_cqrs_serialization` apply it): the related rows a
//! serializer reads are loaded once per page, not once per row, by bulk create and update, by
//! the operator commands `sync` and `bulk-dump`, on sync and async connections; and the
//! messages carry them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use cqrs_diesel::cli::Cli;
use cqrs_diesel::diesel::connection::{Instrumentation, InstrumentationEvent};
use cqrs_diesel::{
    CqrsConnection, DbConn, HookError, MasterModel, MasterStore, RabbitMqTransport, RelateFuture,
    Related, Topology, Transport,
};
use diesel::prelude::*;
use serde_json::{Map, Value, json};

use crate::cli::{Dir, ok};
use crate::db::{MysqlDb, PgDb, TestDb};
use crate::support::{Capture, config_builder};

mod pg_schema {
    diesel::table! {
        person (id) {
            id -> Integer,
            name -> Text,
        }
    }
}

const PG_DDL: &str = "
    CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE tome (id BIGINT PRIMARY KEY, title TEXT NOT NULL, author_ref INTEGER NOT NULL,
        cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL);";

const MYSQL_DDL: &str = "
    CREATE TABLE person (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL);
    CREATE TABLE tome (id BIGINT PRIMARY KEY, title VARCHAR(100) NOT NULL,
        author_ref INTEGER NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0,
        cqrs_updated DATETIME(6) NOT NULL);";

/// Authors 0..PEOPLE, named `person <id>`.
const PEOPLE: i32 = 7;

fn people_sql() -> String {
    let values: Vec<String> = (0..PEOPLE)
        .map(|id| format!("({id}, 'person {id}')"))
        .collect();
    format!("INSERT INTO person VALUES {}", values.join(", "))
}

/// The people of `ids`, by id, with one query on whichever connection the write runs on.
async fn load_people(ids: Vec<i32>, conn: DbConn<'_>) -> Result<HashMap<i32, String>, HookError> {
    use pg_schema::person;
    let query = person::table
        .filter(person::id.eq_any(ids))
        .select((person::id, person::name));
    let rows: Vec<(i32, String)> = match conn {
        DbConn::Pg(conn) => RunQueryDsl::load(query, conn)?,
        DbConn::Mysql(conn) => RunQueryDsl::load(query, conn)?,
        DbConn::AsyncPg(conn) => diesel_async::RunQueryDsl::load(query, conn).await?,
        DbConn::AsyncMysql(conn) => diesel_async::RunQueryDsl::load(query, conn).await?,
        _ => return Err("tomes live on PostgreSQL and MariaDB".into()),
    };
    Ok(rows.into_iter().collect())
}

macro_rules! tome_model {
    ($name:ident, $table:ident, $backend:ident, $updated:ty) => {
        mod $table {
            diesel::table! {
                tome (id) {
                    id -> BigInt,
                    title -> Text,
                    author_ref -> Integer,
                    cqrs_revision -> Integer,
                    cqrs_updated -> $updated,
                }
            }
        }

        /// A tome whose messages carry its author's name, read from `person`.
        #[derive(Debug, Clone, MasterModel)]
        #[cqrs(id = "tome", table = $table::tome, hooks, backends($backend))]
        pub struct $name {
            pub id: i64,
            pub title: String,
            pub author_ref: i32,
            pub cqrs_revision: i32,
            pub cqrs_updated: Updated,
        }

        impl cqrs_diesel::MasterHooks for $name {
            fn relate_cqrs_serialization_async<'a>(
                rows: &'a [&'a Self],
                conn: DbConn<'a>,
            ) -> RelateFuture<'a> {
                let ids = rows.iter().map(|row| row.author_ref).collect();
                Box::pin(async move { Ok(Related::new(load_people(ids, conn).await?)) })
            }

            fn serialize_related(
                &self,
                related: &Related,
                _conn: DbConn<'_>,
                data: &mut Map<String, Value>,
            ) -> Result<(), HookError> {
                let people = related
                    .get::<HashMap<i32, String>>()
                    .ok_or("the people of the page")?;
                data.insert("author_name".into(), json!(people.get(&self.author_ref)));
                Ok(())
            }
        }

        impl Tome for $name {
            fn new(id: i64, title: &str) -> Self {
                $name {
                    id,
                    title: title.to_owned(),
                    author_ref: (id % i64::from(PEOPLE)) as i32,
                    cqrs_revision: 0,
                    cqrs_updated: Default::default(),
                }
            }
            fn set_title(&mut self, title: &str) {
                self.title = title.to_owned();
            }
        }
    };
}

pub trait Tome: MasterModel + Clone + Send + Sync {
    fn new(id: i64, title: &str) -> Self;
    fn set_title(&mut self, title: &str);
}

mod pg {
    use super::*;
    type Updated = DateTime<Utc>;
    tome_model!(PgTome, pg_tome, postgres, Timestamptz);
}

mod mysql {
    use super::*;
    type Updated = NaiveDateTime;
    tome_model!(MysqlTome, mysql_tome, mysql, Datetime);
}

use mysql::MysqlTome;
use pg::PgTome;

/// Counts the statements that read `person`.
#[derive(Clone, Default)]
struct PersonReads(Arc<AtomicUsize>);

impl PersonReads {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn instrumentation(&self) -> impl Instrumentation {
        let count = self.0.clone();
        move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event
                && let query = query.to_string()
                // The outbox inserts carry the names in their bodies (binds).
                && query.contains("person")
                && !query.contains("cqrs_outbox")
            {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The bodies in the outbox, in id order.
fn outbox_bodies<C>(conn: &mut C) -> Vec<Value>
where
    C: diesel::connection::LoadConnection,
    diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'static, C, BodyRow>,
{
    diesel::sql_query("SELECT body FROM cqrs_outbox ORDER BY id")
        .load::<BodyRow>(conn)
        .expect("read the outbox")
        .into_iter()
        .map(|row| serde_json::from_str(&row.body).expect("a JSON body"))
        .collect()
}

#[derive(diesel::QueryableByName)]
struct BodyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}

/// Checks that each body carries its tome's author's name, with `signal`.
fn assert_named(bodies: &[Value], signal: &str) {
    for body in bodies {
        assert_eq!(body["signal_type"], signal, "{body}");
        let id = body["instance_pk"].as_i64().expect("an integer key");
        assert_eq!(
            body["instance_data"]["author_name"],
            format!("person {}", id % i64::from(PEOPLE)),
            "{body}"
        );
    }
}

/// Rows enough for three statements (pages) of a bulk write: 1000 rows each.
const ROWS: i64 = 2500;
const PAGES: usize = 3;

fn set_up<D: TestDb>(db: &D, ddl: &str) {
    db.execute(ddl);
    db.execute(&people_sql());
    db.connect()
        .run_outbox_migrations()
        .expect("outbox migration");
}

fn bulk_writes_relate_once_per_page<D, M>(db: D, ddl: &str)
where
    D: TestDb,
    D::Conn: diesel::connection::LoadConnection,
    diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'static, D::Conn, BodyRow>,
    M: Tome + MasterStore<D::Conn>,
{
    set_up(&db, ddl);
    let conn = &mut db.connect();
    let reads = PersonReads::default();
    conn.set_instrumentation(reads.instrumentation());

    let rows: Vec<M> = (1..=ROWS).map(|id| M::new(id, "first")).collect();
    let stored = M::bulk_create_and_publish(conn, &rows).unwrap();
    assert_eq!(
        reads.get(),
        PAGES,
        "bulk create: one read of `person` per page"
    );

    let renamed: Vec<M> = stored
        .into_iter()
        .map(|mut row| {
            row.set_title("second");
            row
        })
        .collect();
    M::bulk_update_and_publish(conn, &renamed).unwrap();
    assert_eq!(reads.get(), 2 * PAGES, "bulk update: one read per page");

    let bodies = outbox_bodies(conn);
    assert_eq!(bodies.len(), 2 * ROWS as usize);
    assert_named(&bodies, "SAVE");
}

#[test]
fn bulk_writes_relate_once_per_page_on_postgres() {
    bulk_writes_relate_once_per_page::<_, PgTome>(PgDb::new("relate"), PG_DDL);
}

#[test]
fn bulk_writes_relate_once_per_page_on_mariadb() {
    bulk_writes_relate_once_per_page::<_, MysqlTome>(MysqlDb::new("relate"), MYSQL_DDL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_create_relates_once_per_page_on_an_async_connection() {
    use diesel_async::AsyncConnection;
    let db = PgDb::new("relate_async");
    set_up(&db, PG_DDL);
    let mut conn = db.connect_async().await;
    let reads = PersonReads::default();
    conn.set_instrumentation(reads.instrumentation());

    let rows: Vec<PgTome> = (1..=ROWS).map(|id| PgTome::new(id, "first")).collect();
    PgTome::bulk_create_and_publish(&mut conn, &rows)
        .await
        .unwrap();
    assert_eq!(reads.get(), PAGES, "one read of `person` per page");
    let bodies = outbox_bodies(&mut db.connect());
    assert_eq!(bodies.len(), ROWS as usize);
    assert_named(&bodies, "SAVE");
}

/// A PostgreSQL master of 25 tomes, and commands whose connections count their reads of
/// `person`.
fn cli_master(reads: &PersonReads) -> (PgDb, cqrs_diesel::Config, Cli<diesel::PgConnection>) {
    let db = PgDb::new("relate_cli");
    set_up(&db, PG_DDL);
    let rows: Vec<PgTome> = (1..=25).map(|id| PgTome::new(id, "t")).collect();
    PgTome::bulk_create_and_publish(&mut db.connect(), &rows).unwrap();
    let config = config_builder("relate_cli").build().expect("config");
    let connector = db.connector();
    let reads = reads.clone();
    let cli = Cli::new(config.clone(), move || {
        let mut conn = connector()?;
        conn.set_instrumentation(reads.instrumentation());
        Ok(conn)
    })
    .master::<PgTome>();
    (db, config, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_command_relates_once_per_batch() {
    let reads = PersonReads::default();
    let (_db, config, cli) = cli_master(&reads);
    let transport = RabbitMqTransport::new(config.clone());
    transport
        .declare(&Topology::exchange_only(config.exchange()))
        .await
        .unwrap();
    let mut capture = Capture::bind(config.exchange()).await;

    ok(&cli, &["sync", "-c", "tome", "--all", "--batch", "10"]).await;
    assert_eq!(
        reads.get(),
        3,
        "25 rows in batches of 10: three reads of `person`"
    );
    let bodies: Vec<Value> = capture
        .take(25, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_named(&bodies, "SYNC");
    transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_dump_command_relates_once_per_batch() {
    let reads = PersonReads::default();
    let (_db, _config, cli) = cli_master(&reads);
    let dir = Dir::new("relate_dump");
    let dump = dir.file("tome.dump");

    ok(
        &cli,
        &["bulk-dump", "-c", "tome", "-o", &dump, "--batch", "10"],
    )
    .await;
    assert_eq!(
        reads.get(),
        3,
        "25 rows in batches of 10: three reads of `person`"
    );
    let text = std::fs::read_to_string(&dump).expect("the dump");
    let records: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|line| serde_json::from_str(line).expect("a JSON record"))
        .collect();
    assert_eq!(records.len(), 25);
    for record in &records {
        let id = record["id"].as_i64().expect("an id");
        assert_eq!(
            record["author_name"],
            format!("person {}", id % i64::from(PEOPLE)),
            "{record}"
        );
    }
}

fn bulk_sync_relates_once_per_page<D, M>(db: D, ddl: &str)
where
    D: TestDb,
    D::Conn: diesel::connection::LoadConnection,
    diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'static, D::Conn, BodyRow>,
    M: Tome + MasterStore<D::Conn>,
{
    set_up(&db, ddl);
    let conn = &mut db.connect();
    let rows: Vec<M> = (1..=ROWS).map(|id| M::new(id, "first")).collect();
    M::bulk_create_and_publish(conn, &rows).unwrap();
    diesel::connection::SimpleConnection::batch_execute(conn, "DELETE FROM cqrs_outbox").unwrap();
    let reads = PersonReads::default();
    conn.set_instrumentation(reads.instrumentation());

    // And one row that does not exist: skipped.
    let mut keys = rows;
    keys.push(M::new(ROWS + 1, "gone"));
    let queued = cqrs_diesel::MasterConfig::new()
        .bulk_sync(conn, &keys, Some("replica_x"))
        .unwrap();
    assert_eq!(queued, ROWS as usize);
    assert_eq!(reads.get(), PAGES, "one read of `person` per page");
    let bodies = outbox_bodies(conn);
    assert_eq!(bodies.len(), ROWS as usize);
    assert_named(&bodies, "SYNC");
}

#[test]
fn bulk_sync_relates_once_per_page_on_postgres() {
    bulk_sync_relates_once_per_page::<_, PgTome>(PgDb::new("relate_sync"), PG_DDL);
}

#[test]
fn bulk_sync_relates_once_per_page_on_mariadb() {
    bulk_sync_relates_once_per_page::<_, MysqlTome>(MysqlDb::new("relate_sync"), MYSQL_DDL);
}
