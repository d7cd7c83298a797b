//! The replica database goes away: its connections are killed on the server, then it refuses
//! new ones for a while. Nothing is acknowledged until applied, the worker reconnects, and every
//! message lands once the database is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cqrs_diesel::Replicas;
use cqrs_diesel::diesel::connection::SimpleConnection;
use cqrs_diesel::diesel::result::ConnectionError;
use cqrs_diesel::diesel::{Connection, PgConnection};

use super::models::{AuthorRow, PgAuthorReplica};
use super::{Worker, author};
use crate::db::{PgDb, TestDb, pg_url};
use crate::support::unique;

/// Kills every server connection that carries `application_name`.
fn kill_connections(application_name: &str) {
    let mut admin = PgConnection::establish(&pg_url()).expect("PostgreSQL is up");
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{application_name}'"
        ))
        .expect("terminate the worker's connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_waits_for_the_database_and_reconnects() {
    let db = PgDb::new("rdown");
    let application_name = unique("replica_worker");
    let down = Arc::new(AtomicBool::new(false));
    let connect = {
        let inner = db.connector();
        let application_name = application_name.clone();
        let down = down.clone();
        move || -> Result<PgConnection, ConnectionError> {
            if down.load(Ordering::SeqCst) {
                return Err(ConnectionError::BadConnection(
                    "the test has taken the database down".into(),
                ));
            }
            let mut conn = inner()?;
            conn.batch_execute(&format!("SET application_name = '{application_name}'"))
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
    };
    let replicas = Replicas::new(connect).register::<PgAuthorReplica>();
    let worker = Worker::start(db, <PgAuthorReplica as AuthorRow>::DDL, replicas).await;

    worker.broadcast(&author("SAVE", 1, "before", 0)).await;
    worker.wait_settled(1).await;

    // The server drops the worker's connection, and refuses new ones.
    down.store(true, Ordering::SeqCst);
    kill_connections(&application_name);
    for revision in 1..=20 {
        worker
            .broadcast(&author("SAVE", 1, &format!("during {revision}"), revision))
            .await;
    }
    worker
        .wait("the worker to find the database gone", |s| {
            s.unavailable_retries >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = worker.stats();
    assert_eq!(stats.applied(), 1, "nothing applied while down: {stats:?}");
    assert_eq!(stats.dead_lettered, 0);
    assert_eq!(stats.retried, 0, "an outage is not a failing message");

    // Back: everything is applied, the newest revision wins.
    down.store(false, Ordering::SeqCst);
    worker.wait_settled(21).await;
    let rows = PgAuthorReplica::load_all(&mut worker.db.connect());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name(), "during 20");
    assert_eq!(rows[0].revision(), 20);
    assert_eq!(worker.stats().dead_lettered, 0);
}
