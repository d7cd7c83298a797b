//! Two masters in one process, each with a [`MasterConfig`] of its own: each write reads the
//! clock and the message TTL of the configuration it was given, and nothing else.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cqrs_diesel::{ManualClock, MasterConfig, MasterStore};
use uuid::Uuid;

use super::models::{MysqlAuthor, PgAuthor, SqliteAuthor};
use super::side::{Side, on_every_backend_and_side, w};
use super::{Author, Setup, WAIT, stamped_at};
use crate::db::TestDb;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 3, 4, hour, 0, 0)
        .single()
        .expect("a valid time")
}

async fn each_write_uses_its_own_configuration<D, M, X>(db: D)
where
    D: TestDb,
    X: Side<D>,
    M: Author + MasterStore<X::Conn>,
{
    let mut setup = Setup::new::<M>(db).await;
    let conn = &mut X::open(&setup.db).await;
    let (early, late) = (ManualClock::new(at(1)), ManualClock::new(at(9)));
    let first = MasterConfig::new()
        .with_clock(early.clock())
        .with_message_ttl(None);
    let second = MasterConfig::new()
        .with_clock(late.clock())
        .with_message_ttl(Some(Duration::from_secs(60)));
    let new = |id: i32| M::new(id, "x", None, None, at(0), true, 1.0, Uuid::nil(), None);

    // Interleaved, so that neither can be the one "installed" last.
    let a = w!(X::Conn, first.save(&new(1), conn)).unwrap();
    let b = w!(X::Conn, second.save(&new(2), conn)).unwrap();
    let c = w!(X::Conn, first.save(&new(3), conn)).unwrap();
    assert_eq!(
        [stamped_at(&a), stamped_at(&b), stamped_at(&c)],
        [at(1), at(9), at(1)]
    );

    assert_eq!(setup.drain().await, 3);
    let got = setup.capture.take(3, WAIT).await;
    let expires: Vec<&serde_json::Value> = got.iter().map(|(_, body)| &body["expires"]).collect();
    assert!(expires[0].is_null(), "no TTL: {}", expires[0]);
    assert_eq!(
        expires[1], "2031-03-04T09:01:00+00:00",
        "one minute after the late clock"
    );
    assert!(expires[2].is_null(), "no TTL: {}", expires[2]);
}

on_every_backend_and_side!(
    each_write_uses_its_own_configuration,
    PgAuthor,
    MysqlAuthor,
    SqliteAuthor
);
