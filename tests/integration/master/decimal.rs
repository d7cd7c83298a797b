//! A `Numeric` column: a JSON number on the wire (as django-cqrs writes a `Decimal`), read back
//! exactly by a replica.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_diesel::bigdecimal::BigDecimal;
use cqrs_diesel::{MasterModel, ReplicaModel, Replicas};
use diesel::prelude::*;
use serde_json::json;

use super::{Setup, WAIT};
use crate::db::{MysqlDb, PgDb, TestDb};
use crate::replica::Worker;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimals_travel_as_json_numbers() {
    let master = PgDb::new("decimal");
    master.execute(
        "CREATE TABLE price (id INTEGER PRIMARY KEY, amount NUMERIC(12, 2) NOT NULL,
         cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)",
    );
    let mut setup = Setup::new_with_ddl(master).await;
    let row = Price {
        id: 1,
        amount: BigDecimal::from_str("1234.50").unwrap(),
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    };
    row.save_and_publish(&mut setup.db.connect()).unwrap();
    setup.drain().await;
    let got = setup.capture.take(1, WAIT).await;
    assert_eq!(got[0].1["instance_data"]["amount"], json!(1234.5));

    // The same body, applied by a replica on MariaDB, keeps the value exactly.
    let replica = MysqlDb::new("decimal_r");
    let replicas = Replicas::new(replica.connector()).register::<PriceCopy>();
    let worker = Worker::start(
        replica,
        "CREATE TABLE price (id INTEGER PRIMARY KEY, amount DECIMAL(12, 2) NOT NULL,
         cqrs_revision INTEGER NOT NULL, cqrs_updated DATETIME(6) NOT NULL)",
        replicas,
    )
    .await;
    worker.broadcast(&got[0].1).await;
    let stats = worker.wait_settled(1).await;
    assert_eq!(stats.created, 1, "{stats:?}");
    let stored: Vec<PriceCopy> = mysql::price::table.load(&mut worker.db.connect()).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].amount, BigDecimal::from_str("1234.5").unwrap());
}
