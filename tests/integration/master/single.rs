//! PostgreSQL's one-statement writes: a save, a generated-key insert and a delete of a model with
//! the default hooks and no tracked field are one statement each (row and outbox entry in one
//! data-modifying CTE), their messages equal the general path's, and a value the database
//! stores differently from how it was sent (a rounding column, a stored time after the clock)
//! is published as stored.
//!
//! The scenarios that hold for every master run on sync and async PostgreSQL connections
//! ([`on_postgres_sides`]); the property test and the comparison of renamed fields compare two
//! sync databases and stay sync.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_diesel::bigdecimal::BigDecimal;
use cqrs_diesel::{CqrsConnection, MasterModel};
use diesel::prelude::*;
use proptest::prelude::*;
use serde_json::Value;

use super::Statements;
use super::side::{Side, on_postgres_sides, w};
use crate::db::{PgDb, TestDb};
use cqrs_diesel::Exec;
use cqrs_diesel::diesel::pg::Pg;

mod schema {
    diesel::table! {
        gadget (id) {
            id -> BigInt,
            name -> Text,
            note -> Nullable<Text>,
            weight -> Double,
            ratio -> Nullable<Float>,
            count -> Integer,
            active -> Bool,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }

    diesel::table! {
        priced (id) {
            id -> Integer,
            amount -> Numeric,
            cqrs_revision -> Integer,
            cqrs_updated -> Timestamptz,
        }
    }
}

const GADGET_DDL: &str = "CREATE TABLE gadget (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL,
    note TEXT, weight DOUBLE PRECISION NOT NULL, ratio REAL, count INTEGER NOT NULL,
    active BOOLEAN NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0,
    cqrs_updated TIMESTAMPTZ NOT NULL)";

#[derive(Debug, Clone, PartialEq, MasterModel, Queryable)]
#[cqrs(id = "gadget", table = schema::gadget, backends(postgres))]
struct Gadget {
    id: i64,
    name: String,
    note: Option<String>,
    weight: f64,
    ratio: Option<f32>,
    count: i32,
    active: bool,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// The same table with a tracked field: its saves need the old value first.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "gadget", table = schema::gadget, tracked(name), backends(postgres))]
struct TrackedGadget {
    id: i64,
    name: String,
    note: Option<String>,
    weight: f64,
    ratio: Option<f32>,
    count: i32,
    active: bool,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "priced", table = schema::priced, backends(postgres))]
struct Priced {
    id: i32,
    amount: BigDecimal,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).unwrap()
}

fn gadget(id: i64, name: &str) -> Gadget {
    Gadget {
        id,
        name: name.to_owned(),
        note: Some("n".into()),
        weight: 1.5,
        ratio: None,
        count: 3,
        active: true,
        cqrs_revision: 0,
        cqrs_updated: epoch(),
    }
}

fn database(tag: &str) -> PgDb {
    with_gadgets(PgDb::new(tag))
}

/// `db` with the gadget table and the outbox.
fn with_gadgets(db: PgDb) -> PgDb {
    db.execute(GADGET_DDL);
    db.connect().run_outbox_migrations().unwrap();
    db
}

/// The bodies in the outbox, in order.
fn outbox(conn: &mut PgConnection) -> Vec<Value> {
    use cqrs_diesel::outbox::cqrs_outbox::dsl;
    dsl::cqrs_outbox
        .order(dsl::id)
        .select(dsl::body)
        .load::<String>(conn)
        .unwrap()
        .iter()
        .map(|body| serde_json::from_str(body).unwrap())
        .collect()
}

/// A PostgreSQL connection whose statements can be counted, sync or async.
trait Watched: Exec<Backend = Pg> {
    fn watch(&mut self) -> Statements;
}

impl Watched for PgConnection {
    fn watch(&mut self) -> Statements {
        Statements::watch(self)
    }
}

impl Watched for diesel_async::AsyncPgConnection {
    fn watch(&mut self) -> Statements {
        let statements = Statements::default();
        diesel_async::AsyncConnection::set_instrumentation(self, statements.sink());
        statements
    }
}

async fn a_create_an_update_and_a_delete_are_one_statement_each_on_postgres<X>(db: PgDb)
where
    X: Side<PgDb, Conn: Watched>,
{
    let db = with_gadgets(db);
    let conn = &mut X::open(&db).await;
    let statements = conn.watch();

    let stored = w!(X::Conn, gadget(1, "a").save_and_publish(conn)).unwrap();
    assert_eq!(statements.take().len(), 1, "create");
    let mut changed = stored.clone();
    changed.name = "b".into();
    w!(X::Conn, changed.save_and_publish(conn)).unwrap();
    assert_eq!(statements.take().len(), 1, "update");
    assert!(w!(X::Conn, changed.delete_and_publish(conn)).unwrap());
    assert_eq!(statements.take().len(), 1, "delete");
    assert!(!w!(X::Conn, changed.delete_and_publish(conn)).unwrap());
    assert_eq!(statements.take().len(), 1, "delete of a missing row");
    assert_eq!(outbox(&mut db.connect()).len(), 3);
}

on_postgres_sides!(a_create_an_update_and_a_delete_are_one_statement_each_on_postgres);

async fn a_generated_key_insert_is_one_statement_on_postgres<X>(db: PgDb)
where
    X: Side<PgDb, Conn: Watched>,
{
    let db = with_gadgets(db);
    let conn = &mut X::open(&db).await;
    let statements = conn.watch();
    let stored = w!(X::Conn, gadget(0, "a").insert_and_publish(conn)).unwrap();
    assert_eq!(statements.take().len(), 1);
    let bodies = outbox(&mut db.connect());
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["instance_pk"], Value::from(stored.id));
    assert_eq!(bodies[0]["instance_data"]["id"], Value::from(stored.id));
    assert_ne!(stored.id, 0);
}

on_postgres_sides!(a_generated_key_insert_is_one_statement_on_postgres);

fn tracked(id: i64, name: &str) -> TrackedGadget {
    TrackedGadget {
        id,
        name: name.to_owned(),
        note: None,
        weight: 0.0,
        ratio: None,
        count: 0,
        active: false,
        cqrs_revision: 0,
        cqrs_updated: epoch(),
    }
}

/// The same table, tracking a float: PostgreSQL's JSON of a stored float is not read back as
/// the wire's, so its saves read the old values first, on the general path.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "gadget", table = schema::gadget, tracked(name, weight), backends(postgres))]
struct WeightTracked {
    id: i64,
    name: String,
    note: Option<String>,
    weight: f64,
    ratio: Option<f32>,
    count: i32,
    active: bool,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

async fn a_tracked_update_is_one_statement_and_sends_the_old_values<X>(db: PgDb)
where
    X: Side<PgDb, Conn: Watched>,
{
    let db = with_gadgets(db);
    let conn = &mut X::open(&db).await;
    let statements = conn.watch();
    let mut stored = w!(X::Conn, tracked(1, "a").save_and_publish(conn)).unwrap();
    assert_eq!(statements.take().len(), 1, "create");
    stored.name = "b".into();
    w!(X::Conn, stored.save_and_publish(conn)).unwrap();
    assert_eq!(statements.take().len(), 1, "update");
    let bodies = outbox(&mut db.connect());
    assert_eq!(
        bodies[0]["previous_data"],
        serde_json::json!({"name": null})
    );
    assert_eq!(bodies[1]["previous_data"], serde_json::json!({"name": "a"}));
}

on_postgres_sides!(a_tracked_update_is_one_statement_and_sends_the_old_values);

async fn a_save_tracking_a_float_takes_the_general_path<X>(db: PgDb)
where
    X: Side<PgDb, Conn: Watched>,
{
    let db = with_gadgets(db);
    let conn = &mut X::open(&db).await;
    let statements = conn.watch();
    let row = WeightTracked {
        id: 1,
        name: "a".into(),
        note: None,
        weight: 0.1,
        ratio: None,
        count: 0,
        active: false,
        cqrs_revision: 0,
        cqrs_updated: epoch(),
    };
    let mut stored = w!(X::Conn, row.save_and_publish(conn)).unwrap();
    stored.weight = 0.2;
    w!(X::Conn, stored.save_and_publish(conn)).unwrap();
    let sent = statements.take();
    assert!(
        sent.iter().any(|sql| sql.contains("FOR UPDATE")),
        "{sent:#?}"
    );
    assert!(sent.iter().any(|sql| sql == "BEGIN"), "{sent:#?}");
    let bodies = outbox(&mut db.connect());
    assert_eq!(
        bodies[1]["previous_data"],
        serde_json::json!({"name": "a", "weight": 0.1})
    );
}

on_postgres_sides!(a_save_tracking_a_float_takes_the_general_path);

async fn concurrent_tracked_updates_each_send_the_value_they_replaced<
    X: Side<PgDb, Conn: Exec<Backend = Pg>>,
>(
    db: PgDb,
) {
    let db = Arc::new(with_gadgets(db));
    const WRITERS: usize = 4;
    const WRITES: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let db = db.clone();
            X::spawn(async move {
                let conn = &mut X::open(&db).await;
                for write in 0..WRITES {
                    let id = (write % 2) as i64 + 1;
                    let row = tracked(id, &format!("t{writer} w{write}"));
                    w!(X::Conn, row.save_and_publish(conn)).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // Per row, in revision order, each message's old name is the name of the one before.
    let bodies = outbox(&mut db.connect());
    assert_eq!(bodies.len(), WRITERS * WRITES);
    for id in [1, 2] {
        let mut chain: Vec<&Value> = bodies
            .iter()
            .filter(|body| body["instance_pk"] == id)
            .collect();
        chain.sort_by_key(|body| body["instance_data"]["cqrs_revision"].as_i64().unwrap());
        assert_eq!(chain[0]["previous_data"]["name"], Value::Null);
        for (n, pair) in chain.windows(2).enumerate() {
            assert_eq!(
                pair[1]["instance_data"]["cqrs_revision"].as_i64(),
                Some(n as i64 + 1),
                "revisions of row {id}"
            );
            assert_eq!(
                pair[1]["previous_data"]["name"],
                pair[0]["instance_data"]["name"],
                "row {id}, revision {}",
                n + 1
            );
        }
    }
}

on_postgres_sides!(concurrent_tracked_updates_each_send_the_value_they_replaced);

async fn a_value_the_column_rounds_is_published_as_stored<
    X: Side<PgDb, Conn: Exec<Backend = Pg>>,
>(
    db: PgDb,
) {
    db.execute(
        "CREATE TABLE priced (id INTEGER PRIMARY KEY, amount NUMERIC(8, 2) NOT NULL,
         cqrs_revision INTEGER NOT NULL DEFAULT 0, cqrs_updated TIMESTAMPTZ NOT NULL)",
    );
    db.connect().run_outbox_migrations().unwrap();
    let conn = &mut X::open(&db).await;
    let row = Priced {
        id: 1,
        amount: BigDecimal::from_str("1.234").unwrap(),
        cqrs_revision: 0,
        cqrs_updated: epoch(),
    };
    let stored = w!(X::Conn, row.save_and_publish(conn)).unwrap();
    assert_eq!(stored.amount, BigDecimal::from_str("1.23").unwrap());
    let bodies = outbox(&mut db.connect());
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["instance_data"]["amount"], Value::from("1.23"));
}

on_postgres_sides!(a_value_the_column_rounds_is_published_as_stored);

async fn a_stored_time_after_the_clock_still_gets_later_times<
    X: Side<PgDb, Conn: Exec<Backend = Pg>>,
>(
    db: PgDb,
) {
    let db = with_gadgets(db);
    let conn = &mut X::open(&db).await;
    w!(X::Conn, gadget(1, "a").save_and_publish(conn)).unwrap();
    // As if another master's clock ran ahead (a century, measured from the database's clock,
    // so that the test does not depend on today's date): the next writes must still stamp
    // later times.
    let mut other = db.connect();
    diesel::sql_query(
        "UPDATE gadget SET cqrs_updated = date_trunc('second', now()) + interval '100 years'",
    )
    .execute(&mut other)
    .unwrap();
    let ahead: DateTime<Utc> = schema::gadget::table
        .select(schema::gadget::cqrs_updated)
        .first(&mut other)
        .unwrap();
    let after = |micros| {
        cqrs_diesel::wire::format_timestamp(&(ahead + chrono::TimeDelta::microseconds(micros)))
    };
    let stored = w!(X::Conn, gadget(1, "b").save_and_publish(conn)).unwrap();
    assert_eq!(
        stored.cqrs_updated,
        ahead + chrono::TimeDelta::microseconds(1)
    );
    assert_eq!(stored.cqrs_revision, 1);
    assert!(w!(X::Conn, stored.delete_and_publish(conn)).unwrap());
    let bodies = outbox(&mut other);
    assert_eq!(bodies.len(), 3);
    assert_eq!(
        bodies[1]["instance_data"]["cqrs_updated"],
        Value::from(after(1))
    );
    assert_eq!(bodies[1]["instance_data"]["cqrs_revision"], Value::from(1));
    assert_eq!(
        bodies[2]["instance_data"]["cqrs_updated"],
        Value::from(after(2))
    );
    assert_eq!(bodies[2]["instance_data"]["cqrs_revision"], Value::from(2));
}

on_postgres_sides!(a_stored_time_after_the_clock_still_gets_later_times);

/// A body without the parts that depend on the time it was written.
fn timeless(mut body: Value) -> Value {
    let object = body.as_object_mut().unwrap();
    object.remove("expires");
    object["instance_data"]
        .as_object_mut()
        .unwrap()
        .remove("cqrs_updated");
    body
}

/// One write of a generated history.
#[derive(Debug, Clone)]
enum Step {
    Save(Gadget),
    Delete(i64),
}

fn text() -> impl Strategy<Value = String> {
    // Anything PostgreSQL's text holds (no NUL): quotes, backslashes, controls, emoji.
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\u{1}'),
            Just('\n'),
            Just('é'),
            Just('😀'),
            proptest::char::range('a', 'z'),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.1),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let row = (
        1..4i64,
        text(),
        proptest::option::of(text()),
        float(),
        proptest::option::of(any::<f32>().prop_filter("finite", |f| f.is_finite())),
        any::<i32>(),
        any::<bool>(),
    )
        .prop_map(|(id, name, note, weight, ratio, count, active)| {
            Step::Save(Gadget {
                id,
                name,
                note,
                weight,
                ratio,
                count,
                active,
                cqrs_revision: 0,
                cqrs_updated: epoch(),
            })
        });
    let delete = (1..4i64).prop_map(Step::Delete);
    proptest::collection::vec(prop_oneof![4 => row, 1 => delete], 1..8)
}

/// Runs `steps` on `conn`, each in a transaction of its own when `general` (which makes every
/// write take the general path), with the model tracking `name` when `tracking`, and returns
/// the stored rows and the outbox.
fn run(
    conn: &mut PgConnection,
    steps: &[Step],
    general: bool,
    tracking: bool,
) -> (Vec<Gadget>, Vec<Value>) {
    for step in steps {
        let write = |conn: &mut PgConnection| -> cqrs_diesel::Result<()> {
            match step {
                Step::Save(row) if tracking => {
                    let row = row.clone();
                    TrackedGadget {
                        id: row.id,
                        name: row.name,
                        note: row.note,
                        weight: row.weight,
                        ratio: row.ratio,
                        count: row.count,
                        active: row.active,
                        cqrs_revision: row.cqrs_revision,
                        cqrs_updated: row.cqrs_updated,
                    }
                    .save_and_publish(conn)
                    .map(drop)
                }
                Step::Save(row) => row.save_and_publish(conn).map(drop),
                Step::Delete(id) => gadget(*id, "").delete_and_publish(conn).map(drop),
            }
        };
        if general {
            conn.transaction(write).unwrap();
        } else {
            write(conn).unwrap();
        }
    }
    let rows = schema::gadget::table
        .order(schema::gadget::id)
        .load::<Gadget>(conn)
        .unwrap();
    (rows, outbox(conn))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("CQRS_SINGLE_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    /// Generated histories written in one statement per write and on the general path leave
    /// the same rows and queue the same messages (but for the times they were written at),
    /// with and without a tracked field.
    #[test]
    fn one_statement_writes_equal_the_general_path(steps in steps(), tracking in any::<bool>()) {
        let single_db = database("single_prop_a");
        let general_db = database("single_prop_b");
        let (single_rows, single_bodies) =
            run(&mut single_db.connect(), &steps, false, tracking);
        let (general_rows, general_bodies) =
            run(&mut general_db.connect(), &steps, true, tracking);
        let without_times = |rows: Vec<Gadget>| -> Vec<Gadget> {
            rows.into_iter().map(|row| Gadget { cqrs_updated: epoch(), ..row }).collect()
        };
        prop_assert_eq!(without_times(single_rows), without_times(general_rows));
        let single: Vec<Value> = single_bodies.into_iter().map(timeless).collect();
        let general: Vec<Value> = general_bodies.into_iter().map(timeless).collect();
        prop_assert_eq!(single, general);
    }
}

/// The same table with a renamed tracked field, a skipped field and a field whose column has
/// another name: the one-statement write must use the wire names and the columns.
#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "gadget", table = schema::gadget, tracked(label), backends(postgres))]
struct RenamedGadget {
    id: i64,
    #[cqrs(rename = "title", column = name)]
    label: String,
    #[cqrs(skip)]
    note: Option<String>,
    weight: f64,
    ratio: Option<f32>,
    count: i32,
    active: bool,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

#[test]
fn renamed_skipped_and_tracked_fields_are_sent_as_the_general_path_sends_them() {
    let row = |label: &str| RenamedGadget {
        id: 7,
        label: label.to_owned(),
        note: Some("not sent".into()),
        weight: 2.5,
        ratio: Some(0.5),
        count: -1,
        active: true,
        cqrs_revision: 0,
        cqrs_updated: epoch(),
    };
    let single_db = database("single_renamed_a");
    let general_db = database("single_renamed_b");
    let (mut single, mut general) = (single_db.connect(), general_db.connect());
    let statements = single.watch();
    for label in ["first", "second"] {
        row(label).save_and_publish(&mut single).unwrap();
        general
            .transaction(|conn| row(label).save_and_publish(conn))
            .unwrap();
    }
    assert_eq!(statements.take().len(), 2, "one statement per save");
    let single_bodies: Vec<Value> = outbox(&mut single).into_iter().map(timeless).collect();
    let general_bodies: Vec<Value> = outbox(&mut general).into_iter().map(timeless).collect();
    assert_eq!(single_bodies, general_bodies);
    assert_eq!(
        single_bodies[1]["previous_data"],
        serde_json::json!({"title": "first"})
    );
    assert_eq!(single_bodies[1]["instance_data"]["title"], "second");
    assert!(single_bodies[1]["instance_data"].get("note").is_none());
}
