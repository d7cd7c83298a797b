//! User hooks (serializer reading a related row, on sync and async connections, instance
//! filter, meta, correlation id, delete custom data), skipped and renamed fields, and
//! `produce = false`, on PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_diesel::{DbConn, HookError, HookFuture, MasterHooks, MasterModel, MasterStore};
use diesel::prelude::*;
use serde_json::{Map, Value, json};

use super::side::{Async, Blocking, Side, w};
use super::{Setup, WAIT};
use crate::db::{PgDb, TestDb};
use cqrs_diesel::Exec;
use cqrs_diesel::diesel::pg::Pg;

diesel::table! {
    writer (id) {
        id -> Integer,
        name -> Text,
    }
}

diesel::table! {
    book (id) {
        id -> BigInt,
        title -> Text,
        writer_id -> Integer,
        internal_note -> Text,
        cqrs_revision -> BigInt,
        cqrs_updated -> Timestamptz,
    }
}

const DDL: &str = "
    CREATE TABLE writer (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE book (id BIGINT PRIMARY KEY, title TEXT NOT NULL, writer_id INTEGER NOT NULL,
        internal_note TEXT NOT NULL, cqrs_revision BIGINT NOT NULL DEFAULT 0,
        cqrs_updated TIMESTAMPTZ NOT NULL);
    INSERT INTO writer VALUES (7, 'Tolstoy');";

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "book", table = book, hooks, backends(postgres))]
struct Book {
    id: i64,
    title: String,
    #[cqrs(rename = "writer")]
    writer_id: i32,
    #[cqrs(skip)]
    internal_note: String,
    cqrs_revision: i64,
    cqrs_updated: DateTime<Utc>,
}

impl MasterHooks for Book {
    /// Reads the writer's name from its row, awaiting the query on an async connection.
    fn serialize_async<'a>(
        &'a self,
        conn: DbConn<'a>,
        data: &'a mut Map<String, Value>,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            let query = writer::table.find(self.writer_id).select(writer::name);
            let name: String = match conn {
                DbConn::Pg(conn) => RunQueryDsl::first(query, conn)?,
                DbConn::AsyncPg(conn) => diesel_async::RunQueryDsl::first(query, conn).await?,
                _ => return Err("this model lives on PostgreSQL".into()),
            };
            data.insert("writer_name".into(), json!(name));
            if self.title == "fail" {
                return Err("titles may not be 'fail'".into());
            }
            Ok::<(), HookError>(())
        })
    }

    fn is_sync_instance(&self) -> bool {
        !self.title.starts_with("draft")
    }

    fn meta(&self) -> Option<Map<String, Value>> {
        let mut meta = Map::new();
        meta.insert("source".into(), json!("hooks-test"));
        Some(meta)
    }

    fn correlation_id(&self) -> Option<String> {
        Some(format!("corr-{}", self.id))
    }

    fn delete_custom(&self) -> Option<Map<String, Value>> {
        let mut custom = Map::new();
        custom.insert("title".into(), json!(self.title));
        Some(custom)
    }
}

/// A model whose hooks override only the sync `serialize`, which the writes reach through the
/// default `serialize_async`.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "plain_book", table = book, hooks, backends(postgres))]
struct PlainBook {
    id: i64,
    title: String,
    writer_id: i32,
    internal_note: String,
    cqrs_revision: i64,
    cqrs_updated: DateTime<Utc>,
}

impl MasterHooks for PlainBook {
    fn serialize(&self, conn: DbConn<'_>, data: &mut Map<String, Value>) -> Result<(), HookError> {
        let DbConn::Pg(conn) = conn else {
            return Err("a sync connection was expected".into());
        };
        let name: String = writer::table
            .find(self.writer_id)
            .select(writer::name)
            .first(conn)?;
        data.insert("writer_name".into(), json!(name));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_serialize_hook_reads_related_rows_on_a_sync_connection() {
    let db = PgDb::new("plainhooks");
    db.execute(DDL);
    let mut setup = Setup::new_with_ddl(db).await;
    let conn = &mut setup.db.connect();
    let row = PlainBook {
        id: 9,
        title: "Anna Karenina".into(),
        writer_id: 7,
        internal_note: String::new(),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    };
    row.save_and_publish(conn).unwrap();
    assert_eq!(setup.drain().await, 1);
    let got = setup.capture.take(1, WAIT).await;
    assert_eq!(got[0].1["instance_data"]["writer_name"], "Tolstoy");
}

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "silent_book", table = book, produce = false, backends(postgres))]
struct SilentBook {
    id: i64,
    title: String,
    writer_id: i32,
    internal_note: String,
    cqrs_revision: i64,
    cqrs_updated: DateTime<Utc>,
}

fn book(id: i64, title: &str) -> Book {
    Book {
        id,
        title: title.into(),
        writer_id: 7,
        internal_note: "not for replicas".into(),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    }
}

/// The hooks shape every message, with a serializer that reads a related row through the
/// write's own connection, sync or async.
async fn hooks_shape_the_messages<X: Side<PgDb, Conn: Exec<Backend = Pg>>>()
where
    Book: MasterStore<X::Conn>,
{
    let db = PgDb::new("hooks");
    db.execute(DDL);
    let mut setup = Setup::new_with_ddl(db).await;
    let conn = &mut X::open(&setup.db).await;

    let saved = w!(X::Conn, book(1, "War and Peace").save_and_publish(conn)).unwrap();
    assert!(w!(X::Conn, saved.cqrs_sync(conn, Some("replica_x"))).unwrap());
    let draft = w!(X::Conn, book(2, "draft: notes").save_and_publish(conn)).unwrap();
    assert!(
        !w!(X::Conn, draft.cqrs_sync(conn, None)).unwrap(),
        "is_sync_instance said no"
    );
    assert!(w!(X::Conn, saved.delete_and_publish(conn)).unwrap());

    // A failing hook rolls the write back.
    let error = w!(X::Conn, book(3, "fail").save_and_publish(conn)).unwrap_err();
    assert!(
        error.to_string().contains("serialize") && error.to_string().contains("'fail'"),
        "{error}"
    );
    assert!(!error.is_retryable());
    let count: i64 = book::table
        .count()
        .get_result(&mut setup.db.connect())
        .unwrap();
    assert_eq!(
        count, 1,
        "only the draft remains; the failed save left nothing"
    );

    assert_eq!(setup.drain().await, 4);
    let got = setup.capture.take(4, WAIT).await;
    let (key, save) = &got[0];
    assert_eq!(key, "book");
    assert_eq!(save["instance_data"]["writer"], 7, "renamed field");
    assert_eq!(
        save["instance_data"]["writer_name"], "Tolstoy",
        "related row"
    );
    assert!(
        save["instance_data"].get("internal_note").is_none(),
        "skipped field"
    );
    assert!(save["instance_data"].get("writer_id").is_none());
    assert_eq!(save["meta"], json!({"source": "hooks-test"}));
    assert_eq!(save["correlation_id"], "corr-1");
    assert_eq!(save["previous_data"], Value::Null, "no tracked fields");
    assert_eq!(got[1].0, "cqrs.replica_x.book");
    assert_eq!(got[1].1["signal_type"], "SYNC");
    assert_eq!(got[2].1["instance_pk"], 2);
    let (_, delete) = &got[3];
    assert_eq!(delete["signal_type"], "DELETE");
    assert_eq!(delete["instance_data"]["id"], 1);
    assert_eq!(delete["instance_data"]["cqrs_revision"], 1);
    assert_eq!(
        delete["instance_data"]["custom"],
        json!({"title": "War and Peace"})
    );
    assert_eq!(delete["correlation_id"], "corr-1");
    assert!(setup.capture.is_quiet_for(Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_shape_the_messages_on_a_sync_connection() {
    hooks_shape_the_messages::<Blocking>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_shape_the_messages_on_an_async_connection() {
    hooks_shape_the_messages::<Async>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_off_writes_without_publishing() {
    let db = PgDb::new("silent");
    db.execute(DDL);
    let mut setup = Setup::new_with_ddl(db).await;
    let conn = &mut setup.db.connect();
    let row = SilentBook {
        id: 5,
        title: "quiet".into(),
        writer_id: 7,
        internal_note: String::new(),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    };
    let stored = row.save_and_publish(conn).unwrap();
    let stored = stored.save_and_publish(conn).unwrap();
    assert_eq!(stored.cqrs_revision, 1, "the revision still moves");
    assert!(!stored.cqrs_sync(conn, None).unwrap());
    assert!(stored.delete_and_publish(conn).unwrap());
    assert_eq!(setup.outbox_len(), 0);
    assert!(setup.capture.is_quiet_for(Duration::from_millis(300)).await);
}
