//! Row counts through the operations registry, as the operator commands' progress bars use
//! them: every filter kind on a master, all rows on a replica.

use chrono::Utc;
use cqrs_diesel::ops::Operations;
use cqrs_diesel::{MasterModel, RowFilter};
use serde_json::json;

use super::models::PgAuthor;
use super::{Author, Setup};
use crate::db::{PgDb, TestDb};
use crate::replica::models::PgAuthorReplica;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_the_filters() {
    let setup = Setup::new::<PgAuthor>(PgDb::new("ops_count")).await;
    let conn = &mut setup.db.connect();
    let rows: Vec<PgAuthor> = (1..=10)
        .map(|id| {
            PgAuthor::new(
                id,
                &format!("name {id}"),
                None,
                None,
                Utc::now(),
                true,
                0.0,
                uuid::Uuid::new_v4(),
                None,
            )
        })
        .collect();
    let stored = PgAuthor::bulk_create_and_publish(conn, &rows).unwrap();
    let last_stamp = stored.iter().map(super::stamped_at).max().unwrap();
    let ops = Operations::<diesel::PgConnection>::new()
        .master::<PgAuthor>()
        .replica::<PgAuthorReplica>();
    let master = ops.master_ops("author").unwrap();
    let mut count = |filter: RowFilter| master.count(conn, &filter).unwrap();
    assert_eq!(count(RowFilter::default()), 10);
    assert_eq!(
        count(RowFilter {
            pks: Some(vec![json!(1), json!(2), json!(99)]),
            ..RowFilter::default()
        }),
        2
    );
    assert_eq!(
        count(RowFilter {
            pk_from: Some(json!(4)),
            pk_to: Some(json!(6)),
            ..RowFilter::default()
        }),
        3
    );
    assert_eq!(
        count(RowFilter {
            sql: Some("name LIKE 'name 1%'".into()),
            ..RowFilter::default()
        }),
        2
    );
    assert_eq!(
        count(RowFilter {
            // A second after the last stamp the library wrote.
            updated_since: Some(last_stamp + chrono::Duration::seconds(1)),
            ..RowFilter::default()
        }),
        0
    );
    // The replica model reads the same table here: it counts every row.
    assert_eq!(
        ops.replica_ops(PgAuthor::CQRS_ID)
            .unwrap()
            .count(conn)
            .unwrap(),
        10
    );
}
