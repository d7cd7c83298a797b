//! A `Numeric` column: a string of its exact digits on the wire (as Django REST writes a
//! `Decimal`), read back exactly by a replica; a JSON number (as django-cqrs masters write one)
//! is read too. The master writes on sync and async PostgreSQL connections.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_diesel::bigdecimal::BigDecimal;
use cqrs_diesel::{MasterModel, ReplicaModel, Replicas};
use diesel::prelude::*;
use serde_json::json;

use super::side::{Side, on_postgres_sides, w};
use super::{Setup, WAIT};
use crate::db::{MysqlDb, PgDb, TestDb};
use crate::replica::Worker;
use cqrs_diesel::Exec;
use cqrs_diesel::diesel::pg::Pg;

mod pg {
    diesel::table! {
        price (id) {
            id -> Integer,
            amount -> Numeric,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

mod mysql {
    diesel::table! {
        price (id) {
            id -> Integer,
            amount -> Numeric,
            cqrs_revision -> Integer,
            cqrs_updated -> Datetime,
        }
    }
}

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "price", table = pg::price, backends(postgres))]
struct Price {
    id: i32,
    amount: BigDecimal,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

#[derive(Debug, Clone, ReplicaModel, Queryable)]
#[cqrs(id = "price", table = mysql::price, backends(mysql))]
struct PriceCopy {
    id: i32,
    amount: BigDecimal,
    cqrs_revision: i32,
    cqrs_updated: chrono::NaiveDateTime,
}

const MASTER_DDL: &str = "CREATE TABLE price (id INTEGER PRIMARY KEY,
    amount NUMERIC(40, 10) NOT NULL,
    cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)";
const REPLICA_DDL: &str = "CREATE TABLE price (id INTEGER PRIMARY KEY,
    amount DECIMAL(40, 10) NOT NULL,
    cqrs_revision INTEGER NOT NULL, cqrs_updated DATETIME(6) NOT NULL)";

/// Applies `body` on a fresh MariaDB replica and returns the stored amount.
async fn applied_on_mariadb(name: &str, body: &serde_json::Value) -> BigDecimal {
    let replica = MysqlDb::new(name);
    let replicas = Replicas::new(replica.connector()).register::<PriceCopy>();
    let worker = Worker::start(replica, REPLICA_DDL, replicas).await;
    worker.broadcast(body).await;
    let stats = worker.wait_settled(1).await;
    assert_eq!(stats.created, 1, "{stats:?}");
    let stored: Vec<PriceCopy> = mysql::price::table.load(&mut worker.db.connect()).unwrap();
    assert_eq!(stored.len(), 1);
    stored[0].amount.clone()
}

async fn decimals_travel_with_every_digit_from_master_to_replica<
    X: Side<PgDb, Conn: Exec<Backend = Pg>>,
>(
    master: PgDb,
) {
    // 40 significant digits: far beyond an f64's 17.
    let digits = "123456789012345678901234567890.1234567890";
    master.execute(MASTER_DDL);
    let mut setup = Setup::new_with_ddl(master).await;
    let row = Price {
        id: 1,
        amount: BigDecimal::from_str(digits).unwrap(),
        cqrs_revision: 0,
        // Not written: the master stamps its own time.
        cqrs_updated: DateTime::from_timestamp(0, 0).unwrap(),
    };
    let conn = &mut X::open(&setup.db).await;
    w!(X::Conn, row.save_and_publish(conn)).unwrap();
    setup.drain().await;
    let got = setup.capture.take(1, WAIT).await;
    assert_eq!(got[0].1["instance_data"]["amount"], json!(digits));

    let stored = applied_on_mariadb("decimal_r", &got[0].1).await;
    assert_eq!(stored.to_plain_string(), digits);
}

on_postgres_sides!(decimals_travel_with_every_digit_from_master_to_replica);

// Replica only (no master write, so no side to choose).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decimal_sent_as_a_json_number_by_a_django_master_is_stored() {
    let body = json!({
        "signal_type": "SAVE",
        "cqrs_id": "price",
        "instance_pk": 1,
        "instance_data": {
            "id": 1,
            "amount": 1234.5,
            "cqrs_revision": 0,
            "cqrs_updated": "2026-01-02 03:04:05.678901+00:00",
        },
        "previous_data": null,
        "correlation_id": null,
        "retries": 0,
        "expires": null,
        "meta": {},
    });
    let stored = applied_on_mariadb("decimal_num_r", &body).await;
    assert_eq!(stored, BigDecimal::from_str("1234.5").unwrap());
    assert_eq!(stored.to_plain_string(), "1234.5000000000");
}
