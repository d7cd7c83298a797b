//! The master's own stamps when its clock steps back: a row's `cqrs_updated` never goes
//! backwards, on every backend (PostgreSQL and MariaDB compute it in SQL under the row lock;
//! SQLite reads the stored time under its write lock).

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_diesel::{CqrsConnection, MasterConfig, MasterModel};
use uuid::Uuid;

use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};
use crate::master_models::{Author, MysqlAuthor, PgAuthor, SqliteAuthor};

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// The `cqrs_updated` a row was stored with, from its wire form.
fn stamp<M: MasterModel>(row: &M) -> DateTime<Utc> {
    let wire = row.cqrs_updated_wire();
    let text = wire.as_str().expect("cqrs_updated as text");
    cqrs_diesel::wire::parse_timestamp(text)
        .expect("a readable cqrs_updated")
        .with_timezone(&Utc)
}

fn clock_steps_back_and_no_stamp_follows<D, M>(db: D)
where
    D: TestDb,
    M: Author + cqrs_diesel::MasterStore<D::Conn>,
{
    // A clock of this test's own: the other tests of the binary may run at the same time.
    let clock = cqrs_diesel::ManualClock::new(noon());
    let master = MasterConfig::new().with_clock(clock.clock());
    db.execute(M::DDL);
    let mut conn = db.connect();
    conn.run_outbox_migrations().expect("outbox migrations");
    let new =
        |id: i32, name: &str| M::new(id, name, None, None, noon(), true, 1.5, Uuid::nil(), None);

    let first = master.save(&new(1, "at noon"), &mut conn).expect("save");
    assert_eq!(stamp(&first), noon());

    // An hour back: the update is stamped 1 µs after the stored time, not an hour before it.
    clock.set(noon() - Duration::hours(1));
    let mut row = first.clone();
    row.set_name("an hour earlier");
    let second = master.save(&row, &mut conn).expect("update");
    assert_eq!(second.revision(), 1);
    assert_eq!(stamp(&second), noon() + Duration::microseconds(1));

    // Bulk updates too, and a second row created now keeps the clock's time.
    clock.set(noon() - Duration::hours(2));
    let other = master
        .save(&new(2, "created two hours back"), &mut conn)
        .expect("create");
    assert_eq!(stamp(&other), noon() - Duration::hours(2));
    let before = [stamp(&second), stamp(&other)];
    let mut one = second.clone();
    one.set_name("bulk");
    let mut two = other.clone();
    two.set_name("bulk");
    let updated = master
        .bulk_update(&mut conn, &[one, two])
        .expect("bulk update");
    assert_eq!(updated.len(), 2);
    for (row, before) in updated.iter().zip(before) {
        assert!(
            stamp(row) > before,
            "{row:?} must be stamped after {before}"
        );
    }
}

#[test]
fn a_sqlite_master_whose_clock_steps_back_never_stamps_a_row_backwards() {
    clock_steps_back_and_no_stamp_follows::<_, SqliteAuthor>(SqliteDb::new("clk"));
}

#[test]
fn a_postgres_master_whose_clock_steps_back_never_stamps_a_row_backwards() {
    clock_steps_back_and_no_stamp_follows::<_, PgAuthor>(PgDb::new("clk"));
}

#[test]
fn a_mariadb_master_whose_clock_steps_back_never_stamps_a_row_backwards() {
    clock_steps_back_and_no_stamp_follows::<_, MysqlAuthor>(MysqlDb::new("clk"));
}
