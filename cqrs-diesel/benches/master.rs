//! The cost of `save_and_publish` against a plain Diesel write of the same row, on PostgreSQL,
//! with several concurrent writers.
//!
//! Each writer owns its rows and, per row, inserts it once and then updates it again and
//! again. The baseline is what a service without this library would run: one autocommitted
//! `INSERT`, then one autocommitted `UPDATE ... SET ..., cqrs_revision = cqrs_revision + 1`.
//! Ours writes the row and its outbox entry in one transaction. The two alternate over
//! several rounds in the same run, because this machine is shared and absolute times drift.
//!
//! Run: `cargo bench -p cqrs-diesel --bench master`. `PG_DATABASE_URL` overrides
//! `postgres://postgres@127.0.0.1:5432/test`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_diesel::{CqrsConnection, MasterModel};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const ROWS_PER_WRITER: i64 = 50;
const WRITES_PER_ROW: i64 = 20;
const ROUNDS: usize = 3;

diesel::table! {
    account (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
        balance -> BigInt,
        cqrs_revision -> Integer,
        cqrs_updated -> Timestamptz,
    }
}

#[derive(Debug, Clone, MasterModel)]
#[cqrs(id = "account", table = account, tracked(name), backends(postgres))]
struct Account {
    id: i64,
    name: String,
    email: String,
    balance: i64,
    cqrs_revision: i32,
    cqrs_updated: DateTime<Utc>,
}

/// Concurrent writers: `BENCH_WRITERS`, default 4.
fn writers() -> i64 {
    std::env::var("BENCH_WRITERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(4)
}

fn url() -> String {
    std::env::var("PG_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn connect(schema: &str) -> PgConnection {
    let mut conn = PgConnection::establish(&url()).expect("PostgreSQL is up");
    conn.batch_execute(&format!("SET search_path TO {schema}"))
        .expect("set search_path");
    conn
}

fn reset(schema: &str) {
    connect(schema)
        .batch_execute("TRUNCATE account; TRUNCATE cqrs_outbox;")
        .expect("truncate");
}

fn row(id: i64, write: i64) -> Account {
    Account {
        id,
        name: format!("account {id} write {write}"),
        email: format!("user{id}@example.com"),
        balance: write * 100,
        cqrs_revision: 0,
        cqrs_updated: Utc::now(),
    }
}

/// Runs `write(conn, id, n)` for every row and write number on `writers()` threads; returns
/// writes per second.
fn run(schema: &str, write: fn(&mut PgConnection, i64, i64)) -> f64 {
    reset(schema);
    let start = Instant::now();
    let threads: Vec<_> = (0..writers())
        .map(|writer| {
            let schema = schema.to_owned();
            std::thread::spawn(move || {
                let mut conn = connect(&schema);
                let first = writer * ROWS_PER_WRITER;
                for n in 0..WRITES_PER_ROW {
                    for id in first..first + ROWS_PER_WRITER {
                        write(&mut conn, id, n);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    let writes = (writers() * ROWS_PER_WRITER * WRITES_PER_ROW) as f64;
    writes / start.elapsed().as_secs_f64()
}

fn plain(conn: &mut PgConnection, id: i64, n: i64) {
    let r = row(id, n);
    if n == 0 {
        diesel::insert_into(account::table)
            .values((
                account::id.eq(r.id),
                account::name.eq(&r.name),
                account::email.eq(&r.email),
                account::balance.eq(r.balance),
                account::cqrs_revision.eq(0),
                account::cqrs_updated.eq(Utc::now()),
            ))
            .execute(conn)
            .expect("plain insert");
    } else {
        diesel::update(account::table.find(id))
            .set((
                account::name.eq(&r.name),
                account::email.eq(&r.email),
                account::balance.eq(r.balance),
                account::cqrs_updated.eq(Utc::now()),
                account::cqrs_revision.eq(account::cqrs_revision + 1),
            ))
            .execute(conn)
            .expect("plain update");
    }
}

fn ours(conn: &mut PgConnection, id: i64, n: i64) {
    row(id, n).save_and_publish(conn).expect("save_and_publish");
}

fn main() {
    let schema = format!("bench_master_{}", std::process::id());
    let mut admin = PgConnection::establish(&url()).expect("PostgreSQL is up");
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create schema");
    {
        let mut conn = connect(&schema);
        conn.batch_execute(
            "CREATE TABLE account (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
             balance BIGINT NOT NULL, cqrs_revision INTEGER NOT NULL DEFAULT 0,
             cqrs_updated TIMESTAMPTZ NOT NULL)",
        )
        .expect("create table");
        conn.run_outbox_migrations().expect("outbox migration");
    }
    let writes = writers() * ROWS_PER_WRITER * WRITES_PER_ROW;
    println!(
        "save_and_publish vs plain Diesel insert/update, PostgreSQL, {} writers, \
         {writes} writes per run ({ROWS_PER_WRITER} rows per writer, {WRITES_PER_ROW} writes per row)",
        writers()
    );
    let mut best_plain = 0f64;
    let mut best_ours = 0f64;
    for round in 1..=ROUNDS {
        let p = run(&schema, plain);
        let o = run(&schema, ours);
        println!(
            "round {round}: plain {p:>8.0} writes/s ({:>6.1} us/write/writer), save_and_publish {o:>8.0} writes/s ({:>6.1} us), cost {:.2}x",
            per_write_us(p),
            per_write_us(o),
            p / o
        );
        best_plain = best_plain.max(p);
        best_ours = best_ours.max(o);
    }
    println!(
        "best: plain {best_plain:.0} writes/s, save_and_publish {best_ours:.0} writes/s, cost {:.2}x (goal <= 1.5x)",
        best_plain / best_ours
    );
    let _ = admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
    std::thread::sleep(Duration::from_millis(10));
}

fn per_write_us(rate: f64) -> f64 {
    writers() as f64 / rate * 1e6
}
