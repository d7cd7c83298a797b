//! Custom handlers replace the default create/update/delete (with the batch's connection, on
//! each backend), and a replica that touches no database at all.

use std::sync::Mutex;

use cqrs_diesel::{CustomReplica, DbConn, HookError, MessageInfo, ReplicaModel, Replicas};
use diesel::prelude::*;

use super::{Worker, author, author_delete};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

diesel::table! {
    audit_log (pk, event) {
        pk -> Integer,
        event -> Text,
    }
}

const AUDIT_DDL: &str = "CREATE TABLE audit_log (pk INTEGER NOT NULL, event VARCHAR(255) NOT NULL)";

/// Writes an audit line instead of a copy of the row; receives `meta`.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", custom, meta)]
struct AuthorAudit {
    id: i32,
    name: String,
    cqrs_revision: i32,
}

fn log(conn: Option<DbConn<'_>>, pk: i32, event: String) -> Result<(), HookError> {
    let row = (audit_log::pk.eq(pk), audit_log::event.eq(event));
    match conn.ok_or("the audit log needs the database")? {
        DbConn::Pg(conn) => diesel::insert_into(audit_log::table)
            .values(row)
            .execute(conn)?,
        DbConn::Mysql(conn) => diesel::insert_into(audit_log::table)
            .values(row)
            .execute(conn)?,
        DbConn::Sqlite(conn) => diesel::insert_into(audit_log::table)
            .values(row)
            .execute(conn)?,
        _ => return Err("an unexpected backend".into()),
    };
    Ok(())
}

fn count(conn: Option<DbConn<'_>>, pk: i32) -> Result<i64, HookError> {
    let query = audit_log::table.filter(audit_log::pk.eq(pk)).count();
    Ok(match conn.ok_or("the audit log needs the database")? {
        DbConn::Pg(conn) => query.get_result(conn)?,
        DbConn::Mysql(conn) => query.get_result(conn)?,
        DbConn::Sqlite(conn) => query.get_result(conn)?,
        _ => return Err("an unexpected backend".into()),
    })
}

impl CustomReplica for AuthorAudit {
    fn cqrs_exists(conn: Option<DbConn<'_>>, key: &i32) -> Result<bool, HookError> {
        Ok(count(conn, *key)? > 0)
    }

    fn cqrs_create(
        conn: Option<DbConn<'_>>,
        row: Self,
        message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        let meta = message.meta.map(|m| m.to_string()).unwrap_or_default();
        log(
            conn,
            row.id,
            format!("create {} r{} {meta}", row.name, row.cqrs_revision),
        )
    }

    fn cqrs_update(
        conn: Option<DbConn<'_>>,
        row: Self,
        message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        log(
            conn,
            row.id,
            format!(
                "update {} r{} {}",
                row.name, row.cqrs_revision, message.signal_type
            ),
        )
    }

    fn cqrs_delete(
        conn: Option<DbConn<'_>>,
        key: i32,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        log(conn, key, "delete".into())
    }
}

fn events<C>(conn: &mut C) -> Vec<(i32, String)>
where
    C: cqrs_diesel::CqrsConnection + diesel::connection::LoadConnection,
    for<'a> audit_log::table: diesel::query_dsl::LoadQuery<'a, C, (i32, String)>,
{
    let mut events: Vec<(i32, String)> = audit_log::table.load(conn).expect("load the audit log");
    events.sort();
    events
}

async fn custom_handlers_replace_the_default<D: TestDb>(db: D)
where
    D::Conn: diesel::connection::LoadConnection,
    for<'a> audit_log::table: diesel::query_dsl::LoadQuery<'a, D::Conn, (i32, String)>,
{
    let replicas = Replicas::new(db.connector()).register_custom::<AuthorAudit>();
    let worker = Worker::start(db, AUDIT_DDL, replicas).await;
    let mut created = author("SAVE", 1, "Pavel", 0);
    created["meta"] = serde_json::json!({"origin": "crm"});
    worker.broadcast(&created).await;
    worker.wait_settled(1).await;
    worker.broadcast(&author("SAVE", 1, "Pasha", 1)).await;
    worker.wait_settled(2).await;
    worker.broadcast(&author("SYNC", 1, "Pasha", 1)).await;
    worker.wait_settled(3).await;
    worker.broadcast(&author_delete(1, 2)).await;
    let stats = worker.wait_settled(4).await;
    assert_eq!(stats.handled, 4, "{stats:?}");
    let events = events(&mut worker.db.connect());
    assert_eq!(
        events,
        vec![
            (1, r#"create Pavel r0 {"origin":"crm"}"#.to_owned()),
            (1, "delete".to_owned()),
            (1, "update Pasha r1 SAVE".to_owned()),
            (1, "update Pasha r1 SYNC".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handlers_replace_the_default_on_postgres() {
    custom_handlers_replace_the_default(PgDb::new("rc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handlers_replace_the_default_on_mariadb() {
    custom_handlers_replace_the_default(MysqlDb::new("rc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handlers_replace_the_default_on_sqlite() {
    custom_handlers_replace_the_default(SqliteDb::new("rc")).await;
}

/// What the database-less replica saw.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps nothing in a database: only a list in memory.
#[derive(Debug, Clone, ReplicaModel)]
#[cqrs(id = "author", custom)]
struct AuthorCache {
    id: i64,
    name: String,
}

impl CustomReplica for AuthorCache {
    fn cqrs_create(
        conn: Option<DbConn<'_>>,
        row: Self,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        assert!(conn.is_none(), "no database was configured");
        SEEN.lock()
            .map_err(|_| "poisoned")?
            .push(format!("{}={}", row.id, row.name));
        Ok(())
    }

    fn cqrs_delete(
        _conn: Option<DbConn<'_>>,
        key: i64,
        _message: MessageInfo<'_>,
    ) -> Result<(), HookError> {
        SEEN.lock()
            .map_err(|_| "poisoned")?
            .push(format!("{key} deleted"));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_a_database() {
    let replicas =
        Replicas::<diesel::SqliteConnection>::without_database().register_custom::<AuthorCache>();
    let worker = Worker::start(SqliteDb::new("nodb"), "", replicas).await;
    worker.broadcast(&author("SAVE", 7, "Ann", 0)).await;
    worker.broadcast(&author_delete(7, 1)).await;
    let stats = worker.wait_settled(2).await;
    assert_eq!(stats.handled, 2);
    let seen = SEEN.lock().expect("not poisoned").clone();
    assert_eq!(seen, vec!["7=Ann".to_owned(), "7 deleted".to_owned()]);
}
