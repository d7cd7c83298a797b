//! The meta and correlation functions of a [`MasterConfig`] (django-cqrs's
//! `CQRS['master']['meta_function']` and `['correlation_function']`): every write that builds
//! messages with the configuration gives them the functions' `meta` and `correlation_id`,
//! unless the model's own hook gives one.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_diesel::{
    DbConn, HookError, MasterConfig, MasterHooks, MasterModel, MasterStore, MessageContext,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::models::{MysqlAuthor, PgAuthor, SqliteAuthor};
use super::side::{Side, on_every_backend_and_side, w};
use super::{Author, Setup, WAIT};
use crate::db::{MysqlDb, PgDb, TestDb};

/// A configuration whose functions write what they were shown into the message.
fn master<M: MasterModel>() -> MasterConfig {
    MasterConfig::new()
        .with_meta_function(|message: &MessageContext<'_>| {
            let mut meta = Map::new();
            meta.insert("signal".into(), json!(message.signal.as_str()));
            meta.insert("pk".into(), message.instance_pk.clone());
            meta.insert(
                "name".into(),
                message
                    .instance_data
                    .get("name")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            meta.insert(
                "had_previous".into(),
                json!(message.previous_data.is_some()),
            );
            meta.insert("queue".into(), json!(message.queue));
            meta.insert("row_seen".into(), json!(message.row::<M>().is_some()));
            Some(meta)
        })
        .with_correlation_function(|message: &MessageContext<'_>| {
            Some(format!(
                "{}/{}/{}",
                message.cqrs_id,
                message.signal.as_str(),
                message.instance_pk
            ))
        })
}

/// A fixed time for the rows' own timestamps (the writes stamp `cqrs_updated` from the
/// configuration's clock).
fn written_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 3, 4, 5, 0, 0)
        .single()
        .expect("a valid time")
}

fn new_author<M: Author>(id: i32, name: &str) -> M {
    M::new(
        id,
        name,
        None,
        None,
        written_at(),
        true,
        1.0,
        Uuid::nil(),
        None,
    )
}

/// Checks a body's `meta` and `correlation_id` against what [`master`]'s functions make of it.
fn assert_from_functions(body: &Value, signal: &str, pk: i64, name: Option<&str>) {
    assert_eq!(body["signal_type"], signal, "{body}");
    assert_eq!(body["meta"]["signal"], signal, "{body}");
    assert_eq!(body["meta"]["pk"], pk, "{body}");
    assert_eq!(body["meta"]["name"], json!(name), "{body}");
    assert_eq!(body["meta"]["row_seen"], true, "{body}");
    assert_eq!(
        body["correlation_id"],
        format!("author/{signal}/{pk}"),
        "{body}"
    );
}

async fn single_writes_carry_the_functions_meta_and_correlation_id<D, M, X>(db: D)
where
    D: TestDb,
    X: Side<D>,
    M: Author + MasterStore<X::Conn>,
{
    let mut setup = Setup::new::<M>(db).await;
    let conn = &mut X::open(&setup.db).await;
    let config = master::<M>();

    let stored = w!(X::Conn, config.save(&new_author::<M>(1, "Leo"), conn)).unwrap();
    let mut renamed = stored.clone();
    renamed.set_name("Lev");
    let renamed = w!(X::Conn, config.save(&renamed, conn)).unwrap();
    assert!(w!(X::Conn, config.delete(&renamed, conn)).unwrap());

    assert_eq!(setup.drain().await, 3);
    let got: Vec<Value> = setup
        .capture
        .take(3, WAIT)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_from_functions(&got[0], "SAVE", 1, Some("Leo"));
    assert_eq!(
        got[0]["meta"]["had_previous"], true,
        "tracked name: {}",
        got[0]
    );
    assert_from_functions(&got[1], "SAVE", 1, Some("Lev"));
    assert_from_functions(&got[2], "DELETE", 1, None);
}

on_every_backend_and_side!(
    single_writes_carry_the_functions_meta_and_correlation_id,
    PgAuthor,
    MysqlAuthor,
    SqliteAuthor
);

async fn bulk_writes_carry_the_functions_meta_and_correlation_id<D, M>(db: D)
where
    D: TestDb,
    M: Author + MasterStore<D::Conn>,
{
    let mut setup = Setup::new::<M>(db).await;
    let conn = &mut setup.db.connect();
    let config = master::<M>();
    let rows: Vec<M> = (1..=3).map(|id| new_author::<M>(id, "a")).collect();
    let stored = config.bulk_create(conn, &rows).unwrap();
    let renamed: Vec<M> = stored
        .into_iter()
        .map(|mut row| {
            row.set_name("b");
            row
        })
        .collect();
    config.bulk_update(conn, &renamed).unwrap();

    assert_eq!(setup.drain().await, 6);
    let mut got: Vec<Value> = setup
        .capture
        .take(6, WAIT)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    got.sort_by_key(|body| {
        (
            body["meta"]["name"].to_string(),
            body["instance_pk"].as_i64(),
        )
    });
    for (i, body) in got.iter().enumerate() {
        let pk = (i % 3 + 1) as i64;
        let name = if i < 3 { "a" } else { "b" };
        assert_from_functions(body, "SAVE", pk, Some(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_carry_the_functions_meta_and_correlation_id_on_postgres() {
    bulk_writes_carry_the_functions_meta_and_correlation_id::<_, PgAuthor>(PgDb::new("mf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_carry_the_functions_meta_and_correlation_id_on_mariadb() {
    bulk_writes_carry_the_functions_meta_and_correlation_id::<_, MysqlAuthor>(MysqlDb::new("mf"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_shows_the_functions_its_queue() {
    let mut setup = Setup::new::<PgAuthor>(PgDb::new("mf")).await;
    let conn = &mut setup.db.connect();
    let config = master::<PgAuthor>();
    let stored = MasterConfig::DEFAULT
        .save(&new_author::<PgAuthor>(5, "Sync"), conn)
        .unwrap();
    assert!(config.sync(&stored, conn, None).unwrap());
    assert!(config.sync(&stored, conn, Some("replica_a")).unwrap());

    assert_eq!(setup.drain().await, 3);
    let got: Vec<(String, Value)> = setup.capture.take(3, WAIT).await;
    let (_, save) = &got[0];
    assert_eq!(save["meta"], json!({}), "the default configuration: {save}");
    assert!(save["correlation_id"].is_null(), "{save}");
    let (_, broadcast) = &got[1];
    assert_from_functions(broadcast, "SYNC", 5, Some("Sync"));
    assert_eq!(broadcast["meta"]["queue"], Value::Null);
    assert_eq!(broadcast["meta"]["had_previous"], false);
    let (key, direct) = &got[2];
    assert_eq!(key, "cqrs.replica_a.author");
    assert_from_functions(direct, "SYNC", 5, Some("Sync"));
    assert_eq!(direct["meta"]["queue"], "replica_a");
}

diesel::table! {
    note (id) {
        id -> BigInt,
        body -> Text,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

/// Gives its own `meta` to even rows only, and no correlation id.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "note", table = note, hooks, backends(postgres))]
struct Note {
    id: i64,
    body: String,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

impl MasterHooks for Note {
    fn serialize(
        &self,
        _conn: DbConn<'_>,
        _data: &mut Map<String, Value>,
    ) -> Result<(), HookError> {
        Ok(())
    }

    fn meta(&self) -> Option<Map<String, Value>> {
        (self.id % 2 == 0).then(|| {
            let mut meta = Map::new();
            meta.insert("from".into(), json!("the model"));
            meta
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_meta_hook_wins_over_the_meta_function() {
    let db = PgDb::new("mf_note");
    db.execute(
        "CREATE TABLE note (id BIGINT PRIMARY KEY, body TEXT NOT NULL,
         cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)",
    );
    let mut setup = Setup::new_with_ddl(db).await;
    let conn = &mut setup.db.connect();
    let config = MasterConfig::new()
        .with_meta_function(|_: &MessageContext<'_>| {
            let mut meta = Map::new();
            meta.insert("from".into(), json!("the configuration"));
            Some(meta)
        })
        .with_correlation_function(|message: &MessageContext<'_>| {
            Some(format!("c-{}", message.instance_pk))
        });
    for id in [1, 2] {
        let note = Note {
            id,
            body: "x".into(),
            cqrs_revision: 0,
            cqrs_updated: written_at(),
        };
        config.save(&note, conn).unwrap();
    }

    assert_eq!(setup.drain().await, 2);
    let got = setup.capture.take(2, WAIT).await;
    let (_, odd) = &got[0];
    assert_eq!(odd["meta"], json!({"from": "the configuration"}), "{odd}");
    assert_eq!(odd["correlation_id"], "c-1");
    let (_, even) = &got[1];
    assert_eq!(even["meta"], json!({"from": "the model"}), "{even}");
    assert_eq!(
        even["correlation_id"], "c-2",
        "the model gives none: {even}"
    );
}
