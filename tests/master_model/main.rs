//! A model-based test of the whole path, from a real master to a replica: each case is a
//! history of writes on a few keys, run through the library's own master operations
//! (`save_and_publish` creating and updating, with the tracked field changing,
//! `delete_and_publish`, re-creates after deletes, `bulk_create_and_publish`,
//! `bulk_update_and_publish`, `cqrs_sync`, `atomic` blocks saving one row twice and other rows,
//! and two writers on two connections at once) against a real master database, while the
//! master's clock (a `ManualClock`) moves forward, not at all, back by up to an hour, or days
//! ahead between operations. An `OutboxRelay` publishes the outbox to the case's own exchange;
//! a tap queue bound to `author` captures every message it publishes (body and headers, with
//! `x-cqrs-seq`), and copies of captured messages, headers and all, are published again to the
//! replica's queue at generated later points, some after later writes of their row. The replica
//! consumes with one consumer or with three competing on its queue (this process's runtime and
//! two `replica_process` processes), stopped and started again between operations, with
//! varying batch sizes.
//!
//! When every message is settled, each replica row must equal the master's row field by field,
//! bit for bit, `cqrs_revision` and `cqrs_updated` included; keys the master deleted have no
//! replica row; the replica state of each key is its last message's (revision, time, DELETE or
//! not, `x-cqrs-seq`), so it says deleted exactly for the deleted keys; nothing is
//! dead-lettered. The master never needs its clock for the order: docs/DESIGN.md, "The order of
//! one row's messages", rule 1.
//!
//! Its own test binary, whose tests run one at a time ([`SERIAL`]): each case starts several
//! processes' worth of relays and consumers. Every case has a master clock of its own, handed
//! to its writes in a [`MasterConfig`].
//!
//! `CQRS_MODEL_CASES` sets the cases per test (default [`DEFAULT_CASES`]),
//! `CQRS_MODEL_SHRINK_ITERS` bounds the shrinking of a failure (default
//! [`DEFAULT_SHRINK_ITERS`], and at most [`MAX_SHRINK_TIME_MS`]); the other `PROPTEST_*`
//! settings apply. A failing case's seed is saved in [`REGRESSIONS`] and run first next time.

#[allow(dead_code)]
#[path = "../common/authors.rs"]
mod authors;
mod clock;
#[allow(dead_code)]
#[path = "../integration/db.rs"]
mod db;
#[allow(dead_code)]
#[path = "../integration/master/models.rs"]
mod master_models;
#[allow(dead_code)]
#[path = "../integration/replica/process.rs"]
mod process;
#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;
mod watchdog;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use cqrs_diesel::diesel::result::{DatabaseErrorKind, Error as DieselError};
use cqrs_diesel::transport::{OutgoingMessage, direct_routing_key};
use cqrs_diesel::wire::{SEQ_HEADER, parse_seq, parse_timestamp};
use cqrs_diesel::{
    Config, ConsumerHandle, ConsumerRuntime, CqrsConnection, Error, ManualClock, MasterConfig,
    MasterStore, OutboxRelay, RabbitMqTransport, RelayHandle, ReplicaStore, Replicas, SessionSetup,
    Topology, Transport,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use uuid::Uuid;

use authors::{MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};
use db::{MysqlDb, PgDb, SqliteDb, TestDb};
use master_models::{Author, MysqlAuthor, PgAuthor, SqliteAuthor};
use process::ReplicaProcess;

const DEFAULT_CASES: u32 = 8;
const DEFAULT_SHRINK_ITERS: u32 = 64;
const MAX_SHRINK_TIME_MS: u32 = 120_000;
/// Where failing cases' seeds are kept (proptest's file format: one `cc <seed>` line each).
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/master_model/proptest-regressions.txt"
);
/// The most operations a history has.
const MAX_STEPS: usize = 32;
/// The longest anything may take to be published, or to be settled.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The replica's prefetch with three consumers: small, so the broker hands every one of them
/// messages.
const PREFETCH_THREE: u16 = 3;
const PREFETCH_ONE: u16 = 64;

/// The tests of this binary run one at a time (each is heavy on the databases and the broker).
static SERIAL: Mutex<()> = Mutex::new(());

/// Where a case's master clock starts: a fixed instant, not today's date.
fn case_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// A case's master: a clock of its own, starting at [`case_start`], and messages queued without
/// a TTL (`expires: null`): the replicas read expiry against the system's clock, which the
/// master's does not follow.
pub(crate) fn case_master() -> (ManualClock, MasterConfig) {
    let clock = ManualClock::new(case_start());
    let config = MasterConfig::new()
        .with_clock(clock.clock())
        .with_message_ttl(None);
    (clock, config)
}

// ---------------------------------------------------------------------------------------------
// The model: a history of master operations
// ---------------------------------------------------------------------------------------------

/// The values of one save. `extra` decides the fields the tests' `Author` has no setter for
/// (email, birth date, joined at, external id, bio).
#[derive(Clone, PartialEq)]
struct Values {
    name: String,
    score: f64,
    active: bool,
    extra: u8,
}

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("a valid date")
}

impl Values {
    /// For a delete or a SYNC, whose values are not written.
    fn placeholder() -> Self {
        Values {
            name: "-".into(),
            score: 0.0,
            active: false,
            extra: 0,
        }
    }

    fn email(&self) -> Option<String> {
        (!self.extra.is_multiple_of(3)).then(|| format!("a{}@example.com", self.extra))
    }

    fn birth_date(&self) -> Option<NaiveDate> {
        match self.extra % 4 {
            0 => None,
            1 => Some(ymd(1970, 1, 1)),
            2 => Some(ymd(9999, 12, 31)),
            _ => Some(ymd(1000, 1, 1) + chrono::Days::new(u64::from(self.extra) * 997)),
        }
    }

    fn joined_at(&self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid time")
            + chrono::Duration::microseconds(i64::from(self.extra) * 1_000_003)
    }

    fn external_id(&self) -> Uuid {
        Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677 ^ u128::from(self.extra))
    }

    fn bio(&self) -> Option<String> {
        self.extra
            .is_multiple_of(5)
            .then(|| format!("bio {} \u{1F600}", self.extra))
    }

    fn author<M: Author>(&self, id: i32) -> M {
        M::new(
            id,
            &self.name,
            self.email().as_deref(),
            self.birth_date(),
            self.joined_at(),
            self.active,
            self.score,
            self.external_id(),
            self.bio().as_deref(),
        )
    }
}

/// How the master clock moves before an operation, in microseconds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Not at all: the operation runs at the same time as the one before.
    Equal,
    Forward(i64),
    /// Back by up to an hour.
    Back(i64),
    /// Days ahead.
    FarAhead(i64),
}

impl Tick {
    fn micros(self) -> i64 {
        match self {
            Tick::Equal => 0,
            Tick::Forward(us) => us,
            Tick::Back(us) => -us,
            Tick::FarAhead(days) => days * 86_400_000_000,
        }
    }
}

/// A write of one of two concurrent writers.
#[derive(Clone)]
enum Write {
    Save(i32, Values),
    Delete(i32),
    Sync(i32),
}

impl Write {
    fn key(&self) -> i32 {
        match self {
            Write::Save(id, _) | Write::Delete(id) | Write::Sync(id) => *id,
        }
    }
}

#[derive(Clone)]
enum Op {
    /// `save_and_publish`: creates the row, or updates it (the name, tracked, changes).
    Save(i32, Values),
    /// `delete_and_publish` (nothing when there is no row).
    Delete(i32),
    /// `cqrs_sync(conn, None)` (nothing when there is no row).
    Sync(i32),
    /// `bulk_create_and_publish` of the keys (the first values of each) the master has no row
    /// of.
    BulkCreate(Vec<(i32, Values)>),
    /// `bulk_update_and_publish` (the last values of each key; keys without a row are skipped
    /// by the library).
    BulkUpdate(Vec<(i32, Values)>),
    /// One `atomic` block: saves of `key` (`first`, then each of `again`), interleaved with the
    /// saves of `others`.
    Atomic {
        key: i32,
        first: Values,
        again: Vec<Values>,
        others: Vec<(i32, Values)>,
    },
    /// Two writers, each on its own connection, started together.
    Concurrent([Vec<Write>; 2]),
    /// A copy of a captured message of the key published again to the replica's queue: the
    /// latest captured one when `back` is 0, else `back` before it (or the first).
    Replay { key: i32, back: u8 },
    /// Stops the consumers, or starts them again.
    Pause,
    /// Waits until everything written so far is published and settled.
    Settle,
}

impl Op {
    /// The saves of an atomic block, in order.
    fn atomic_saves<'a>(
        key: i32,
        first: &'a Values,
        again: &'a [Values],
        others: &'a [(i32, Values)],
    ) -> Vec<(i32, &'a Values)> {
        let mut out = vec![(key, first)];
        for n in 0..again.len().max(others.len()) {
            if let Some((id, values)) = others.get(n) {
                out.push((*id, values));
            }
            if let Some(values) = again.get(n) {
                out.push((key, values));
            }
        }
        out
    }
}

struct Case {
    keys: i32,
    /// The replica's `CQRS_BATCH_SIZE`.
    consumer_batch: usize,
    /// The relay's batch size.
    relay_batch: usize,
    steps: Vec<(Tick, Op)>,
}

// ---------------------------------------------------------------------------------------------
// A compact printout (proptest prints the minimal failing case with it)
// ---------------------------------------------------------------------------------------------

/// A signed span of microseconds: `+1.000005s`, `-59m59.999999s`, `+12d`.
fn span(us: i64) -> String {
    let sign = if us < 0 { '-' } else { '+' };
    let abs = us.unsigned_abs();
    let (days, rest) = (abs / 86_400_000_000, abs % 86_400_000_000);
    let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
    let mut out = String::from(sign);
    if days > 0 {
        out.push_str(&format!("{days}d"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if rest > 0 || out.len() == 1 {
        out.push_str(&format!("{}.{:06}s", rest / 1_000_000, rest % 1_000_000));
    }
    out
}

impl fmt::Debug for Values {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{:?} {} score {:?} ({:#x}) x{}}}",
            self.name,
            if self.active { "active" } else { "inactive" },
            self.score,
            self.score.to_bits(),
            self.extra,
        )
    }
}

impl fmt::Debug for Tick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tick::Equal => write!(f, "="),
            other => write!(f, "{}", span(other.micros())),
        }
    }
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Write::Save(id, values) => write!(f, "save k{id} {values:?}"),
            Write::Delete(id) => write!(f, "delete k{id}"),
            Write::Sync(id) => write!(f, "sync k{id}"),
        }
    }
}

fn rows_list(rows: &[(i32, Values)]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|(id, values)| format!("k{id} {values:?}"))
        .collect();
    rows.join(", ")
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Save(id, values) => write!(f, "save k{id} {values:?}"),
            Op::Delete(id) => write!(f, "delete k{id}"),
            Op::Sync(id) => write!(f, "sync k{id}"),
            Op::BulkCreate(rows) => write!(f, "bulk create [{}]", rows_list(rows)),
            Op::BulkUpdate(rows) => write!(f, "bulk update [{}]", rows_list(rows)),
            Op::Atomic {
                key,
                first,
                again,
                others,
            } => {
                let saves: Vec<String> = Op::atomic_saves(*key, first, again, others)
                    .into_iter()
                    .map(|(id, values)| format!("k{id} {values:?}"))
                    .collect();
                write!(f, "atomic [save {}]", saves.join(", save "))
            }
            Op::Concurrent([a, b]) => write!(f, "concurrently A {a:?} B {b:?}"),
            Op::Replay { key, back } => {
                write!(f, "replay a copy of k{key}'s latest message - {back}")
            }
            Op::Pause => write!(f, "stop or start the consumers"),
            Op::Settle => write!(f, "settle"),
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} key(s), replica batches of {}, relay batches of {}; step: clock move -> master \
             clock (from the case's start), operation",
            self.keys, self.consumer_batch, self.relay_batch
        )?;
        let mut clock = 0i64;
        for (n, (tick, op)) in self.steps.iter().enumerate() {
            clock += tick.micros();
            writeln!(f, "  #{n} {tick:?} -> @{}: {op:?}", span(clock))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------
//
// Structure before values, no `prop_flat_map` (shrinking redraws a flat-mapped part), keys drawn
// as slots mapped onto the case's keys at the end, so that shrinking the number of keys to 1
// keeps every operation and puts them all on one key.

/// Characters the name sometimes ends with: astral, combining, quotes, a backslash.
const ODD: &[&str] = &[
    "\u{1F600}",
    "\u{1D11E}",
    "\u{301}",
    "ß",
    "'",
    "\"",
    "\\",
    " ",
];

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        1 => prop::sample::select(vec![
            1.5,
            0.0,
            -0.0,
            0.1,
            -1.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::MAX,
            f64::MIN,
            9_007_199_254_740_993.0,
        ]),
        2 => any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite()),
    ]
}

fn values() -> impl Strategy<Value = Values> {
    (
        0u16..1000,
        prop::option::weighted(0.3, 0..ODD.len()),
        score(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(n, odd, score, active, extra)| Values {
            name: format!("n{n}{}", odd.map_or("", |i| ODD[i])),
            score,
            active,
            extra,
        })
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        2 => Just(Tick::Equal),
        3 => prop_oneof![1i64..=10, 1i64..=1_000, 1i64..=5_000_000].prop_map(Tick::Forward),
        3 => prop_oneof![1i64..=10, 1i64..=1_000_000, 1i64..=3_600_000_000].prop_map(Tick::Back),
        1 => (1i64..=400).prop_map(Tick::FarAhead),
    ]
}

/// A key slot (mapped onto the case's keys by [`Slots::map`]).
fn slot() -> impl Strategy<Value = u8> {
    0u8..5
}

/// A write of a concurrent writer (beside its key slot, where `None` is the group's key).
#[derive(Debug, Clone)]
enum RawWrite {
    Save(Values),
    Delete,
    Sync,
}

#[derive(Debug, Clone)]
enum RawOp {
    Save(u8, Values),
    Delete(u8),
    Sync(u8),
    BulkCreate(Vec<(u8, Values)>),
    BulkUpdate(Vec<(u8, Values)>),
    Atomic(u8, Values, Vec<Values>, Vec<(u8, Values)>),
    Concurrent(u8, [Vec<(Option<u8>, RawWrite)>; 2]),
    Replay(u8, u8),
    Pause,
    Settle,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    let write = || {
        // `cqrs_sync` racing an update or a delete of its row: it must lock the row, or its
        // SYNC takes the later outbox id with the earlier state.
        prop::strategy::Union::new_weighted(vec![
            (3, values().prop_map(RawWrite::Save).boxed()),
            (1, Just(RawWrite::Delete).boxed()),
            (1, Just(RawWrite::Sync).boxed()),
        ])
    };
    let side =
        move || prop::collection::vec((prop::option::weighted(0.25, slot()), write()), 1..=3);
    let rows = || prop::collection::vec((slot(), values()), 1..=3);
    prop_oneof![
        6 => (slot(), values()).prop_map(|(k, v)| RawOp::Save(k, v)),
        4 => slot().prop_map(RawOp::Delete),
        1 => slot().prop_map(RawOp::Sync),
        1 => rows().prop_map(RawOp::BulkCreate),
        1 => rows().prop_map(RawOp::BulkUpdate),
        2 => (
            slot(),
            values(),
            prop::collection::vec(values(), 0..=2),
            prop::collection::vec((slot(), values()), 0..=2),
        )
            .prop_map(|(k, first, again, others)| RawOp::Atomic(k, first, again, others)),
        2 => (slot(), side(), side()).prop_map(|(k, a, b)| RawOp::Concurrent(k, [a, b])),
        3 => (slot(), 0u8..=4).prop_map(|(k, back)| RawOp::Replay(k, back)),
        1 => Just(RawOp::Pause),
        1 => Just(RawOp::Settle),
    ]
}

/// Maps slots onto keys `1..=keys`.
struct Slots(i32);

impl Slots {
    fn id(&self, slot: u8) -> i32 {
        1 + i32::from(slot) % self.0
    }

    fn rows(&self, rows: Vec<(u8, Values)>) -> Vec<(i32, Values)> {
        rows.into_iter().map(|(s, v)| (self.id(s), v)).collect()
    }

    fn map(&self, op: RawOp) -> Op {
        match op {
            RawOp::Save(s, v) => Op::Save(self.id(s), v),
            RawOp::Delete(s) => Op::Delete(self.id(s)),
            RawOp::Sync(s) => Op::Sync(self.id(s)),
            RawOp::BulkCreate(rows) => Op::BulkCreate(self.rows(rows)),
            RawOp::BulkUpdate(rows) => Op::BulkUpdate(self.rows(rows)),
            RawOp::Atomic(s, first, again, others) => Op::Atomic {
                key: self.id(s),
                first,
                again,
                others: self.rows(others),
            },
            RawOp::Concurrent(s, sides) => Op::Concurrent(sides.map(|side| {
                side.into_iter()
                    .map(|(other, write)| {
                        let id = self.id(other.unwrap_or(s));
                        match write {
                            RawWrite::Save(v) => Write::Save(id, v),
                            RawWrite::Delete => Write::Delete(id),
                            RawWrite::Sync => Write::Sync(id),
                        }
                    })
                    .collect()
            })),
            RawOp::Replay(s, back) => Op::Replay {
                key: self.id(s),
                back,
            },
            RawOp::Pause => Op::Pause,
            RawOp::Settle => Op::Settle,
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![1i32..=2, 1i32..=5],
        prop::sample::select(vec![1usize, 2, 3, 7, 50]),
        prop::sample::select(vec![1000usize, 1, 2]),
        prop::collection::vec((tick(), raw_op()), 1..=MAX_STEPS),
    )
        .prop_map(|(keys, consumer_batch, relay_batch, steps)| {
            let slots = Slots(keys);
            Case {
                keys,
                consumer_batch,
                relay_batch,
                steps: steps
                    .into_iter()
                    .map(|(tick, op)| (tick, slots.map(op)))
                    .collect(),
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A row of `cqrs_replica_state`.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
struct StateRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pk: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    revision: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    updated_us: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    seq: Option<i64>,
}

const STATE_SQL: &str = "SELECT pk, revision, updated_us, deleted, seq FROM cqrs_replica_state WHERE cqrs_id = 'author'";

/// Every field of a row, each as its `Debug` text (which tells apart every two `f64`s that
/// differ in a bit, `-0.0` and `0.0` included, and shows times to the nanosecond), the score
/// with its bits too.
type Fields = Vec<(&'static str, String)>;

/// A master backend with a replica on the same backend.
trait Side: 'static {
    const NAME: &'static str;
    type Conn: CqrsConnection;
    type Db: TestDb<Conn = Self::Conn> + 'static;
    type Master: Author + MasterStore<Self::Conn>;
    type Replica: ReplicaStore<Self::Conn>;
    fn db(tag: &str) -> Self::Db;
    /// Every `author` row, by id (the master's and the replica's tables are alike).
    fn rows(conn: &mut Self::Conn) -> Result<BTreeMap<i32, Fields>, String>;
    fn states(conn: &mut Self::Conn) -> Result<Vec<StateRow>, String>;
}

macro_rules! side {
    ($side:ident, $name:literal, $db:ty, $conn:ty, $master:ty, $replica:ty, $schema:ident) => {
        struct $side;

        impl Side for $side {
            const NAME: &'static str = $name;
            type Conn = $conn;
            type Db = $db;
            type Master = $master;
            type Replica = $replica;

            fn db(tag: &str) -> $db {
                <$db>::new(tag)
            }

            fn rows(conn: &mut $conn) -> Result<BTreeMap<i32, Fields>, String> {
                use authors::$schema::author::dsl;
                use diesel::prelude::*;
                let rows: Vec<$replica> = dsl::author
                    .order(dsl::id)
                    .load(conn)
                    .map_err(|e| format!("loading the author rows: {e}"))?;
                Ok(rows.into_iter().map(|r| (r.id, r.fields())).collect())
            }

            fn states(conn: &mut $conn) -> Result<Vec<StateRow>, String> {
                use diesel::RunQueryDsl;
                diesel::sql_query(STATE_SQL)
                    .load(conn)
                    .map_err(|e| format!("loading the replica states: {e}"))
            }
        }
    };
}

side!(
    Postgres,
    "postgres",
    PgDb,
    diesel::PgConnection,
    PgAuthor,
    PgAuthorReplica,
    pg_schema
);
side!(
    Mariadb,
    "mariadb",
    MysqlDb,
    diesel::MysqlConnection,
    MysqlAuthor,
    MysqlAuthorReplica,
    mysql_schema
);
side!(
    Sqlite,
    "sqlite",
    SqliteDb,
    diesel::SqliteConnection,
    SqliteAuthor,
    SqliteAuthorReplica,
    sqlite_schema
);

// ---------------------------------------------------------------------------------------------
// The broker side of a case: the tap, the consumers
// ---------------------------------------------------------------------------------------------

/// A message the relay published, as the tap captured it.
#[derive(Clone)]
struct Captured {
    id: i32,
    seq: Option<i64>,
    signal: String,
    revision: i64,
    updated_us: i64,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Captured {
    fn parse(body: Vec<u8>, headers: Vec<(String, String)>) -> Result<Self, String> {
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("a captured body is not JSON: {e}"))?;
        let data = &json["instance_data"];
        let seq = headers
            .iter()
            .find(|(key, _)| key == SEQ_HEADER)
            .map(|(_, value)| value.as_str());
        let updated = data["cqrs_updated"].as_str().unwrap_or_default();
        Ok(Captured {
            id: json["instance_pk"]
                .as_i64()
                .and_then(|id| i32::try_from(id).ok())
                .ok_or_else(|| format!("a captured body without an integer key: {json}"))?,
            seq: parse_seq(seq)?,
            signal: json["signal_type"].as_str().unwrap_or_default().to_owned(),
            revision: data["cqrs_revision"].as_i64().unwrap_or(-1),
            updated_us: parse_timestamp(updated)
                .map_err(|e| format!("a captured cqrs_updated {updated:?}: {e}"))?
                .timestamp_micros(),
            body,
            headers,
        })
    }

    fn describe(&self) -> String {
        format!(
            "k{} {} r{} seq {}",
            self.id,
            self.signal,
            self.revision,
            self.seq.map_or("none".into(), |seq| seq.to_string())
        )
    }
}

/// A queue bound to the case's exchange with the `author` key: it receives a copy of every
/// message the relay publishes (the replica's queue receives the same), and nothing the test
/// publishes to the replica's queue directly. Its connection also asks the broker about
/// queues.
struct Tap {
    connection: lapin::Connection,
    channel: lapin::Channel,
    captured: Arc<Mutex<Vec<Result<Captured, String>>>>,
}

impl Tap {
    async fn bind(exchange: &str) -> Tap {
        use futures_util::StreamExt;
        use lapin::types::AMQPValue;
        let connection = support::raw_connection().await;
        let (channel, mut consumer) =
            support::exclusive_consumer(&connection, exchange, "author", "mm_tap").await;
        let captured = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&captured);
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let headers = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(|table| {
                        table
                            .inner()
                            .iter()
                            .filter_map(|(key, value)| match value {
                                AMQPValue::LongString(s) => Some((key.to_string(), s.to_string())),
                                AMQPValue::ShortString(s) => Some((key.to_string(), s.to_string())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let message = Captured::parse(delivery.data, headers);
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(message);
            }
        });
        Tap {
            connection,
            channel,
            captured,
        }
    }

    fn len(&self) -> usize {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Every message captured so far.
    fn messages(&self) -> Result<Vec<Captured>, String> {
        self.captured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// (messages ready, consumers) of `queue`.
    async fn queue_counts(&self, queue: &str) -> Result<(u32, u32), String> {
        use lapin::options::QueueDeclareOptions;
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(|e| format!("asking the broker about {queue}: {e}"))?;
        Ok((declared.message_count(), declared.consumer_count()))
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "".into()).await;
    }
}

/// What consumers settled.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    applied: u64,
    dead_lettered: u64,
}

/// The replica's consumers: this process's runtime (slot 0) and `processes` `replica_process`es
/// (slots 1 and 2) on the same queue, database and configuration.
struct Consumers<S: Side> {
    db: S::Db,
    config: Config,
    transport: RabbitMqTransport,
    processes: usize,
    handle: Option<ConsumerHandle>,
    extra: Vec<ReplicaProcess>,
    /// What the stopped runtimes settled.
    stopped: Tally,
    /// Messages applied per consumer slot, by the stopped runtimes.
    slots: [u64; 3],
}

impl<S: Side> Consumers<S> {
    fn queue(&self) -> &str {
        self.config.queue().expect("a replica queue")
    }

    fn running(&self) -> bool {
        self.handle.is_some()
    }

    fn start(&mut self, rt: &tokio::runtime::Runtime, tap: &Tap) -> Result<(), String> {
        let replicas = Replicas::new(self.db.connector()).register::<S::Replica>();
        let runtime = ConsumerRuntime::new(self.transport.clone(), self.config.clone(), replicas)
            .batch_wait(Duration::from_millis(5));
        self.handle = Some(rt.block_on(async move { runtime.spawn() }));
        let env = self.db.process_env();
        for _ in 0..self.processes {
            self.extra.push(ReplicaProcess::spawn(&self.config, &env));
        }
        // Every consumer on the queue before anything is published, so each gets its share.
        let want = u32::try_from(1 + self.processes).expect("few consumers");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (_, consumers) = rt.block_on(tap.queue_counts(self.queue()))?;
            if consumers >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("only {consumers} of {want} consumers came up"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(handle) = self.handle.take() {
            match rt.block_on(handle.shutdown()) {
                Ok(stats) => {
                    self.stopped.applied += stats.applied();
                    self.stopped.dead_lettered += stats.dead_lettered;
                    self.slots[0] += stats.applied();
                }
                Err(error) => result = Err(format!("the consumer runtime failed: {error}")),
            }
        }
        for (n, process) in std::mem::take(&mut self.extra).into_iter().enumerate() {
            match process.stop() {
                Ok(counts) => {
                    self.stopped.applied += counts.applied;
                    self.stopped.dead_lettered += counts.dead_lettered;
                    self.slots[1 + n] += counts.applied;
                }
                Err(error) => result = Err(format!("replica process {}: {error}", n + 1)),
            }
        }
        result
    }

    /// What every consumer settled so far, stopped or running.
    fn settled(&self) -> Tally {
        let mut out = self.stopped;
        if let Some(handle) = &self.handle {
            let stats = handle.stats();
            out.applied += stats.applied();
            out.dead_lettered += stats.dead_lettered;
        }
        for process in &self.extra {
            let counts = process.counts();
            out.applied += counts.applied;
            out.dead_lettered += counts.dead_lettered;
        }
        out
    }

    fn wait_settled(&self, n: u64) -> Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let tally = self.settled();
            if tally.applied + tally.dead_lettered >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out waiting for {n} messages settled: {} applied, {} dead-lettered",
                    tally.applied, tally.dead_lettered
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// An error a write may meet because of the other writer of a concurrent group (a create of a
/// key the other one created first, a SYNC of a row the other one deleted, a conflict that
/// outlived the library's retries), or, for a SYNC, because the row is deleted: the write
/// changed nothing and queued nothing.
fn expected_error(error: &Error) -> bool {
    matches!(
        error,
        Error::NotFound { .. }
            | Error::Database(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _
            ))
    ) || error.is_conflict()
}

/// Opens a master connection as an application would (`SessionSetup`).
fn writer<S: Side>(db: &S::Db) -> Result<S::Conn, String> {
    let mut conn = (db.connector())().map_err(|e| format!("connecting to the master: {e}"))?;
    SessionSetup::new()
        .apply(&mut conn)
        .map_err(|e| format!("setting up a master connection: {e}"))?;
    Ok(conn)
}

fn write_one<S: Side>(
    master: &MasterConfig,
    conn: &mut S::Conn,
    write: &Write,
) -> Result<(), Error> {
    let placeholder = Values::placeholder();
    match write {
        Write::Save(id, values) => master
            .save(&values.author::<S::Master>(*id), conn)
            .map(drop),
        Write::Delete(id) => master
            .delete(&placeholder.author::<S::Master>(*id), conn)
            .map(drop),
        Write::Sync(id) => master
            .sync(&placeholder.author::<S::Master>(*id), conn, None)
            .map(drop),
    }
}

struct Harness<'a, S: Side> {
    rt: &'a tokio::runtime::Runtime,
    case: &'a Case,
    clock: &'a ManualClock,
    master: &'a MasterConfig,
    base: DateTime<Utc>,
    offset: i64,
    conn: S::Conn,
    conn_b: S::Conn,
    consumers: Consumers<S>,
    tap: Tap,
    relay: Option<RelayHandle>,
    relay_transport: RabbitMqTransport,
    replayed: u64,
    log: Vec<String>,
}

impl<S: Side> Harness<'_, S> {
    /// Waits until the relay has published the whole outbox and the tap has every message it
    /// counted.
    fn wait_published(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let pending = self
                .conn
                .outbox_pending()
                .map_err(|e| format!("counting the outbox: {e}"))?;
            let published = self
                .relay
                .as_ref()
                .map_or(0, |relay| relay.stats().published);
            let captured = self.tap.len() as u64;
            if pending == 0 && captured >= published {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the outbox was not published in time: {pending} entries wait, the relay \
                     published {published}, the tap has {captured}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn settle(&mut self) -> Result<(), String> {
        if !self.consumers.running() {
            self.consumers.start(self.rt, &self.tap)?;
        }
        self.wait_published()?;
        self.consumers
            .wait_settled(self.tap.len() as u64 + self.replayed)
    }

    fn exec(&mut self, n: usize, op: &Op) -> Result<(), String> {
        let fail = |what: &str, error: Error| format!("step #{n}: {what}: {error}");
        match op {
            Op::Save(id, values) => {
                let write = Write::Save(*id, values.clone());
                write_one::<S>(self.master, &mut self.conn, &write).map_err(|e| fail("save", e))?;
            }
            Op::Delete(id) => {
                write_one::<S>(self.master, &mut self.conn, &Write::Delete(*id))
                    .map_err(|e| fail("delete", e))?;
            }
            Op::Sync(id) => match write_one::<S>(self.master, &mut self.conn, &Write::Sync(*id)) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(error) => return Err(fail("sync", error)),
            },
            Op::BulkCreate(rows) => {
                let mut seen = BTreeSet::new();
                let mut absent = Vec::new();
                for (id, values) in rows {
                    if !seen.insert(*id) {
                        continue;
                    }
                    let row = values.author::<S::Master>(*id);
                    let stored = row
                        .cqrs_find(&mut self.conn, false)
                        .map_err(|e| fail("bulk create: reading a row", e))?;
                    if stored.is_none() {
                        absent.push(row);
                    }
                }
                if absent.len() < seen.len() {
                    self.log.push(format!(
                        "#{n}: bulk create of {} of its {} keys (the others have rows)",
                        absent.len(),
                        seen.len()
                    ));
                }
                if !absent.is_empty() {
                    self.master
                        .bulk_create(&mut self.conn, &absent)
                        .map_err(|e| fail("bulk create", e))?;
                }
            }
            Op::BulkUpdate(rows) => {
                // The last values of each key.
                let mut seen = BTreeSet::new();
                let mut last: Vec<S::Master> = rows
                    .iter()
                    .rev()
                    .filter(|(id, _)| seen.insert(*id))
                    .map(|(id, values)| values.author::<S::Master>(*id))
                    .collect();
                last.reverse();
                self.master
                    .bulk_update(&mut self.conn, &last)
                    .map_err(|e| fail("bulk update", e))?;
            }
            Op::Atomic {
                key,
                first,
                again,
                others,
            } => {
                let rows: Vec<S::Master> = Op::atomic_saves(*key, first, again, others)
                    .into_iter()
                    .map(|(id, values)| values.author::<S::Master>(id))
                    .collect();
                let mut attempt = 0;
                loop {
                    let master = self.master;
                    let result = cqrs_diesel::atomic(&mut self.conn, |conn| {
                        for row in &rows {
                            master.save(row, conn)?;
                        }
                        Ok::<(), Error>(())
                    });
                    match result {
                        Ok(()) => break,
                        Err(error) if error.is_conflict() && attempt < 5 => attempt += 1,
                        Err(error) => return Err(fail("atomic block", error)),
                    }
                }
            }
            Op::Concurrent([a, b]) => self.concurrent(n, a, b)?,
            Op::Replay { key, back } => self.replay(n, *key, *back)?,
            Op::Pause => {
                if self.consumers.running() {
                    self.consumers.stop(self.rt)?;
                } else {
                    self.consumers.start(self.rt, &self.tap)?;
                }
            }
            Op::Settle => self.settle()?,
        }
        Ok(())
    }

    fn concurrent(&mut self, n: usize, a: &[Write], b: &[Write]) -> Result<(), String> {
        let barrier = std::sync::Barrier::new(2);
        let master = self.master;
        let side = |name: &'static str, conn: &mut S::Conn, writes: &[Write]| {
            barrier.wait();
            let mut notes = Vec::new();
            for write in writes {
                match write_one::<S>(master, conn, write) {
                    Ok(()) => {}
                    Err(error) if expected_error(&error) => notes.push(format!(
                        "#{n}: writer {name}: {write:?} wrote nothing: {error}"
                    )),
                    Err(error) => {
                        return Err(format!("step #{n}: writer {name}: {write:?}: {error}"));
                    }
                }
            }
            Ok(notes)
        };
        let (conn_a, conn_b) = (&mut self.conn, &mut self.conn_b);
        let results = std::thread::scope(|scope| {
            let first = scope.spawn(|| side("A", conn_a, a));
            let second = scope.spawn(|| side("B", conn_b, b));
            [first.join(), second.join()]
        });
        for result in results {
            let notes = result.map_err(|_| format!("step #{n}: a writer panicked"))??;
            self.log.extend(notes);
        }
        Ok(())
    }

    fn replay(&mut self, n: usize, key: i32, back: u8) -> Result<(), String> {
        self.wait_published()?;
        let mut mine: Vec<Captured> = self
            .tap
            .messages()?
            .into_iter()
            .filter(|m| m.id == key)
            .collect();
        mine.sort_by_key(|m| m.seq);
        let Some(latest) = mine.last() else {
            self.log
                .push(format!("#{n}: no message of k{key} to copy yet"));
            return Ok(());
        };
        let pick = &mine[mine.len() - 1 - usize::from(back).min(mine.len() - 1)];
        let mut message = OutgoingMessage::new(
            direct_routing_key(self.consumers.queue(), "author"),
            pick.body.clone(),
        );
        for (name, value) in &pick.headers {
            message = message.with_header(name, value);
        }
        self.rt
            .block_on(self.consumers.transport.publish_confirmed(&message))
            .map_err(|e| format!("step #{n}: publishing a copy: {e}"))?;
        self.replayed += 1;
        self.log.push(format!(
            "#{n}: copied {} (latest of the key: {})",
            pick.describe(),
            latest.describe()
        ));
        Ok(())
    }

    fn run(&mut self) -> Result<(), String> {
        for (n, (tick, op)) in self.case.steps.iter().enumerate() {
            self.offset += tick.micros();
            self.clock
                .set(self.base + chrono::Duration::microseconds(self.offset));
            watchdog::phase(format!("{}: step #{n}: {op:?}", S::NAME));
            self.exec(n, op)?;
        }
        self.check()
    }

    /// Once every message is settled: the replica equals the master.
    fn check(&mut self) -> Result<(), String> {
        watchdog::phase(format!("{}: the final check", S::NAME));
        if !self.consumers.running() {
            self.consumers.start(self.rt, &self.tap)?;
        }
        self.wait_published()?;
        let relay = self.relay.take().expect("the relay runs until the check");
        watchdog::phase(format!("{}: the final check: stopping the relay", S::NAME));
        let relayed = self.rt.block_on(relay.shutdown());
        watchdog::phase(format!("{}: the final check: settling", S::NAME));
        let deadline = Instant::now() + TIMEOUT;
        while (self.tap.len() as u64) < relayed.published {
            if Instant::now() > deadline {
                return Err(format!(
                    "the tap has {} of the {} messages the relay published",
                    self.tap.len(),
                    relayed.published
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let captured = self.tap.messages()?;
        let expected = captured.len() as u64 + self.replayed;
        self.consumers.wait_settled(expected)?;
        let tally = self.consumers.settled();

        let mut problems = Vec::new();
        if relayed.unroutable > 0 {
            problems.push(format!("{} messages were unroutable", relayed.unroutable));
        }
        for message in captured.iter().filter(|m| m.seq.is_none()) {
            problems.push(format!(
                "the relay published {} without {SEQ_HEADER}",
                message.describe()
            ));
        }
        if tally.dead_lettered > 0 {
            problems.push(format!(
                "{} messages were dead-lettered",
                tally.dead_lettered
            ));
        }
        let dead_letter_queue = self
            .consumers
            .config
            .dead_letter_queue()
            .expect("a dead-letter queue")
            .to_owned();
        let (dead, _) = self
            .rt
            .block_on(self.tap.queue_counts(&dead_letter_queue))?;
        if dead > 0 {
            problems.push(format!("{dead} messages wait in the dead-letter queue"));
        }

        // Each key's last message: the one with the highest sequence number.
        let mut last: BTreeMap<i32, &Captured> = BTreeMap::new();
        for message in &captured {
            let entry = last.entry(message.id).or_insert(message);
            if message.seq > entry.seq {
                *entry = message;
            }
        }
        // A message counted twice (applied, then delivered again after its acknowledgement
        // was lost in a stop) may leave another in flight: then look again for a moment.
        let patience = if tally.applied + tally.dead_lettered > expected {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + patience;
        let master_rows = S::rows(&mut self.conn)?;
        loop {
            let mut replica = self.consumers.db.connect();
            let differences = compare::<S>(&master_rows, &mut replica, &last)?;
            if differences.is_empty() || Instant::now() >= deadline {
                let keys: BTreeSet<i32> = differences.iter().map(|(id, _)| *id).collect();
                problems.extend(differences.into_iter().map(|(_, problem)| problem));
                // What the relay published of each of those keys, in the master's order.
                for id in keys {
                    let mut mine: Vec<&Captured> = captured.iter().filter(|m| m.id == id).collect();
                    mine.sort_by_key(|m| m.seq);
                    let mine: Vec<String> = mine
                        .iter()
                        .map(|m| {
                            format!(
                                "{} r{} @{} seq {}",
                                m.signal,
                                m.revision,
                                span(m.updated_us - self.base.timestamp_micros()),
                                m.seq.map_or("none".into(), |seq| seq.to_string())
                            )
                        })
                        .collect();
                    problems.push(format!("the relay published of k{id}: {}", mine.join(", ")));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "on {} with {} consumer(s): {} messages published by the relay, {} copies \
                 published again, {} applied, {} dead-lettered:\n{}",
                S::NAME,
                self.consumers.processes + 1,
                captured.len(),
                self.replayed,
                tally.applied,
                tally.dead_lettered,
                problems.join("\n")
            ))
        }
    }
}

/// The replica's rows and states against the master's rows and each key's last message.
fn compare<S: Side>(
    master: &BTreeMap<i32, Fields>,
    replica: &mut S::Conn,
    last: &BTreeMap<i32, &Captured>,
) -> Result<Vec<(i32, String)>, String> {
    let mut problems = Vec::new();
    let rows = S::rows(replica)?;
    let ids: BTreeSet<i32> = master.keys().chain(rows.keys()).copied().collect();
    let show = |fields: &Fields| {
        let fields: Vec<String> = fields.iter().map(|(f, v)| format!("{f} {v}")).collect();
        fields.join(", ")
    };
    for id in ids {
        match (master.get(&id), rows.get(&id)) {
            (Some(want), Some(got)) => {
                for ((field, want), (_, got)) in want.iter().zip(got) {
                    if want != got {
                        problems.push((
                            id,
                            format!("k{id} {field}: the replica has {got}, the master {want}"),
                        ));
                    }
                }
            }
            (Some(want), None) => problems.push((
                id,
                format!(
                    "k{id}: the replica has no row, the master has {}",
                    show(want)
                ),
            )),
            (None, Some(got)) => problems.push((
                id,
                format!(
                    "k{id}: the master has no row, the replica has {}",
                    show(got)
                ),
            )),
            (None, None) => {}
        }
    }

    let states: BTreeMap<String, StateRow> = S::states(replica)?
        .into_iter()
        .map(|state| (state.pk.clone(), state))
        .collect();
    let want: BTreeMap<String, StateRow> = last
        .iter()
        .map(|(id, message)| {
            let state = StateRow {
                pk: id.to_string(),
                revision: message.revision,
                updated_us: message.updated_us,
                deleted: message.signal == "DELETE",
                seq: message.seq,
            };
            (state.pk.clone(), state)
        })
        .collect();
    for pk in want.keys().chain(states.keys()).collect::<BTreeSet<_>>() {
        let id = pk.parse::<i32>().unwrap_or(i32::MIN);
        match (want.get(pk), states.get(pk)) {
            (Some(want), Some(got)) if want != got => problems.push((
                id,
                format!("state of k{pk}: {got:?}, expected the last message's {want:?}"),
            )),
            (Some(want), None) => {
                problems.push((id, format!("state of k{pk}: none, expected {want:?}")));
            }
            (None, Some(got)) => problems.push((
                id,
                format!("state of k{pk}: {got:?}, but the master sent no message of it"),
            )),
            _ => {}
        }
        if let Some(got) = states.get(pk) {
            let master_has = master.contains_key(&id);
            if got.deleted == master_has {
                problems.push((
                    id,
                    format!(
                        "state of k{pk} says deleted = {}, but the master {} the row",
                        got.deleted,
                        if master_has { "has" } else { "deleted" }
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

/// Runs one case on fresh databases (master and replica), exchange and queues; adds what each
/// consumer slot applied to `slots`.
fn run_case<S: Side>(
    rt: &tokio::runtime::Runtime,
    consumers: usize,
    case: &Case,
    slots: &RefCell<[u64; 3]>,
) -> Result<(), String> {
    let (clock, master_config) = case_master();
    let base = case_start();

    watchdog::phase(format!(
        "{}: setting up the databases and the broker",
        S::NAME
    ));
    let master = S::db("mm_master");
    master.execute(<S::Master as Author>::DDL);
    master
        .connect()
        .run_outbox_migrations()
        .map_err(|e| format!("outbox migrations: {e}"))?;
    let replica = S::db("mm_replica");
    replica.execute(<S::Master as Author>::DDL);
    replica
        .connect()
        .run_replica_migrations()
        .map_err(|e| format!("replica migrations: {e}"))?;

    let prefetch = if consumers > 1 {
        PREFETCH_THREE
    } else {
        PREFETCH_ONE
    };
    let config = support::config_builder("mm")
        .prefetch(prefetch)
        .batch_size(case.consumer_batch)
        .max_retries(Some(0))
        .retry_delay(Duration::from_millis(10))
        .build()
        .map_err(|e| format!("the replica's configuration: {e}"))?;
    let transport = RabbitMqTransport::new(config.clone());
    rt.block_on(transport.declare(&Topology::from_config(&config, ["author"])))
        .map_err(|e| format!("declaring the topology: {e}"))?;
    let tap = rt.block_on(Tap::bind(config.exchange()));
    let relay_config = Config::builder()
        .amqp_url(&support::amqp_url())
        .exchange(config.exchange())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("the relay's configuration: {e}"))?;
    let relay_transport = RabbitMqTransport::new(relay_config);
    let relay = OutboxRelay::new(relay_transport.clone(), master.connector())
        .batch_size(case.relay_batch)
        .poll_interval(Duration::from_millis(50));
    let relay = rt.block_on(async move { relay.spawn() });

    let conn = writer::<S>(&master)?;
    let conn_b = writer::<S>(&master)?;
    let mut harness = Harness::<S> {
        rt,
        case,
        clock: &clock,
        master: &master_config,
        base,
        offset: 0,
        conn,
        conn_b,
        consumers: Consumers {
            db: replica,
            config,
            transport,
            processes: consumers.saturating_sub(1),
            handle: None,
            extra: Vec::new(),
            stopped: Tally::default(),
            slots: [0; 3],
        },
        tap,
        relay: Some(relay),
        relay_transport,
        replayed: 0,
        log: Vec::new(),
    };
    let result = harness
        .consumers
        .start(rt, &harness.tap)
        .and_then(|()| harness.run());

    // Tear down, whatever happened.
    watchdog::phase(format!("{}: tear-down: stopping the relay", S::NAME));
    if let Some(relay) = harness.relay.take() {
        rt.block_on(relay.shutdown());
    }
    watchdog::phase(format!("{}: tear-down: stopping the consumers", S::NAME));
    let stopped = harness.consumers.stop(rt);
    {
        let mut total = slots.borrow_mut();
        for (total, n) in total.iter_mut().zip(harness.consumers.slots) {
            *total += n;
        }
    }
    let exchange = harness.consumers.config.exchange().to_owned();
    let queues: Vec<String> = [
        harness.consumers.config.queue(),
        harness.consumers.config.dead_letter_queue(),
    ]
    .into_iter()
    .flatten()
    .map(str::to_owned)
    .collect();
    watchdog::phase(format!("{}: tear-down: closing the transports", S::NAME));
    rt.block_on(async {
        harness.consumers.transport.close().await;
        harness.relay_transport.close().await;
        harness.tap.close().await;
        let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
        support::cleanup(&exchange, &queues).await;
    });
    let log = std::mem::take(&mut harness.log);
    watchdog::phase(format!("{}: tear-down: dropping the databases", S::NAME));
    drop(harness);
    drop(master);
    watchdog::idle();

    match result.and(stopped) {
        Ok(()) => Ok(()),
        Err(error) if log.is_empty() => Err(error),
        Err(error) => {
            let shown = log.len().min(60);
            Err(format!(
                "{error}\nwhat the history did ({shown} of {} notes):\n  {}",
                log.len(),
                log[..shown].join("\n  ")
            ))
        }
    }
}

fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?}: expected a number")),
        Err(_) => default,
    }
}

/// The seed proptest saved last in [`REGRESSIONS`] (the failing case's).
fn saved_seed() -> String {
    std::fs::read_to_string(REGRESSIONS)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|line| line.starts_with("cc "))
                .map(|line| line.split('#').next().unwrap_or(line).trim().to_owned())
        })
        .unwrap_or_else(|| "(none saved)".into())
}

/// Runs `CQRS_MODEL_CASES` cases on backend `S` with `consumers` consumers.
fn check<S: Side>(consumers: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    // `RUST_LOG=cqrs_core=debug,cqrs_diesel=debug` shows what the relay and consumers do.
    // Without it, nothing is logged (the shared clean-up of the broker makes lapin log an
    // error for a closing channel, which would clutter a failure's report).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let config = ProptestConfig {
        cases: env_u32("CQRS_MODEL_CASES", DEFAULT_CASES),
        max_shrink_iters: env_u32("CQRS_MODEL_SHRINK_ITERS", DEFAULT_SHRINK_ITERS),
        max_shrink_time: MAX_SHRINK_TIME_MS,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    };
    let slots = RefCell::new([0u64; 3]);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        run_case::<S>(&rt, consumers, &case, &slots).map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!(
            "{} with {consumers} consumer(s): {error}\nseed, saved in {REGRESSIONS}: {}",
            S::NAME,
            saved_seed()
        );
    }
    if consumers == 3 {
        let slots = slots.into_inner();
        println!(
            "applied per consumer (this process, replica_process 1, replica_process 2): \
             {slots:?}"
        );
        assert!(
            slots.iter().all(|&applied| applied > 0),
            "each of the three consumers applies messages; applied per consumer (this \
             process, replica_process 1, replica_process 2): {slots:?}"
        );
    }
}

#[test]
fn replica_equals_a_postgres_master_with_one_consumer() {
    check::<Postgres>(1);
}

#[test]
fn replica_equals_a_postgres_master_with_three_consumers() {
    check::<Postgres>(3);
}

#[test]
fn replica_equals_a_mariadb_master_with_one_consumer() {
    check::<Mariadb>(1);
}

#[test]
fn replica_equals_a_mariadb_master_with_three_consumers() {
    check::<Mariadb>(3);
}

#[test]
fn replica_equals_a_sqlite_master_with_one_consumer() {
    check::<Sqlite>(1);
}

#[test]
fn replica_equals_a_sqlite_master_with_three_consumers() {
    check::<Sqlite>(3);
}

// ---------------------------------------------------------------------------------------------
// The generator reaches the hard cases
// ---------------------------------------------------------------------------------------------

/// Which hard cases a history holds, as far as can be told without running it (writes of two
/// concurrent writers leave their keys' rows unknown until a later write settles them).
#[derive(Debug, Default, Clone, Copy)]
struct Reach {
    /// A write of a row after the clock stepped back during the row's life.
    back_in_life: bool,
    /// A write of a row at the time of an earlier operation's write of it.
    equal_time: bool,
    /// A re-create at a clock at or before the stamp of the DELETE that ended the row's last
    /// life.
    recreate_not_after_delete: bool,
    /// An `atomic` block saving one row twice.
    atomic_twice: bool,
    /// Two concurrent writers writing one key.
    concurrent_one_key: bool,
    /// A copy of a message published after a later write of its row.
    late_copy: bool,
}

#[derive(Clone, Default)]
struct KeyModel {
    /// `None`: unknown (after concurrent writers).
    exists: Option<bool>,
    /// The row's `cqrs_updated`, in microseconds from the case's start.
    stamp: i64,
    /// The stamp of the DELETE that ended the last life.
    deleted_at: Option<i64>,
    /// The clock stepped back during the current life.
    back: bool,
    /// (step, clock) of the last write.
    last_write: Option<(usize, i64)>,
    /// Messages certainly queued.
    messages: u32,
}

/// A save of `id` at step `n` and `clock` in the model; `message` is false for the second save
/// of a row in one atomic block (which rewrites the first one's message).
fn model_save(
    keys: &mut BTreeMap<i32, KeyModel>,
    id: i32,
    message: bool,
    (n, clock): (usize, i64),
    out: &mut Reach,
) {
    let key = keys.get_mut(&id).expect("a key of the case");
    if key
        .last_write
        .is_some_and(|(step, at)| step != n && at == clock)
    {
        out.equal_time = true;
    }
    match key.exists {
        Some(true) => {
            out.back_in_life |= key.back;
            key.stamp = clock.max(key.stamp + 1);
        }
        Some(false) => {
            out.recreate_not_after_delete |= key.deleted_at.is_some_and(|d| clock <= d);
            key.stamp = clock;
            key.back = false;
        }
        None => {
            key.stamp = clock;
            key.back = false;
        }
    }
    key.exists = Some(true);
    key.last_write = Some((n, clock));
    key.messages += u32::from(message);
}

fn reach(case: &Case) -> Reach {
    let mut out = Reach::default();
    let mut keys: BTreeMap<i32, KeyModel> = (1..=case.keys)
        .map(|id| {
            (
                id,
                KeyModel {
                    exists: Some(false),
                    ..KeyModel::default()
                },
            )
        })
        .collect();
    let mut clock = 0i64;
    for (n, (tick, op)) in case.steps.iter().enumerate() {
        clock += tick.micros();
        if matches!(tick, Tick::Back(_)) {
            for key in keys.values_mut().filter(|k| k.exists == Some(true)) {
                key.back = true;
            }
        }
        match op {
            Op::Save(id, _) => model_save(&mut keys, *id, true, (n, clock), &mut out),
            Op::Delete(id) => {
                let key = keys.get_mut(id).expect("a key of the case");
                if key.exists == Some(true) {
                    key.deleted_at = Some(clock.max(key.stamp + 1));
                    key.messages += 1;
                    key.last_write = Some((n, clock));
                } else {
                    key.deleted_at = None;
                }
                key.exists = Some(false);
            }
            Op::Sync(id) => {
                let key = keys.get_mut(id).expect("a key of the case");
                if key.exists == Some(true) {
                    key.messages += 1;
                }
            }
            Op::BulkCreate(rows) => {
                let mut seen = BTreeSet::new();
                for (id, _) in rows {
                    if seen.insert(*id) && keys[id].exists == Some(false) {
                        model_save(&mut keys, *id, true, (n, clock), &mut out);
                    }
                }
            }
            Op::BulkUpdate(rows) => {
                let mut seen = BTreeSet::new();
                for (id, _) in rows {
                    if seen.insert(*id) && keys[id].exists == Some(true) {
                        model_save(&mut keys, *id, true, (n, clock), &mut out);
                    }
                }
            }
            Op::Atomic {
                key,
                first,
                again,
                others,
            } => {
                out.atomic_twice |= !again.is_empty();
                let mut seen = BTreeSet::new();
                for (id, _) in Op::atomic_saves(*key, first, again, others) {
                    let message = seen.insert(id);
                    model_save(&mut keys, id, message, (n, clock), &mut out);
                }
            }
            Op::Concurrent([a, b]) => {
                let a_keys: BTreeSet<i32> = a.iter().map(Write::key).collect();
                out.concurrent_one_key |= b.iter().any(|w| a_keys.contains(&w.key()));
                for write in a.iter().chain(b) {
                    let key = keys.get_mut(&write.key()).expect("a key of the case");
                    key.exists = None;
                    key.deleted_at = None;
                    key.back = false;
                    key.stamp = key.stamp.max(clock);
                    key.last_write = Some((n, clock));
                    key.messages += u32::from(matches!(write, Write::Save(..)));
                }
            }
            Op::Replay { key, back } => {
                out.late_copy |= *back >= 1 && keys[key].messages >= 2;
            }
            Op::Pause | Op::Settle => {}
        }
    }
    out
}

#[test]
fn the_generator_reaches_the_hard_cases() {
    const HISTORIES: usize = 500;
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = case();
    let mut counts = [0usize; 6];
    for _ in 0..HISTORIES {
        let case = strategy.new_tree(&mut runner).expect("a history").current();
        let reach = reach(&case);
        let hits = [
            reach.back_in_life,
            reach.equal_time,
            reach.recreate_not_after_delete,
            reach.atomic_twice,
            reach.concurrent_one_key,
            reach.late_copy,
        ];
        for (count, hit) in counts.iter_mut().zip(hits) {
            *count += usize::from(hit);
        }
    }
    let names = [
        "a backwards clock step inside a row's life",
        "an equal time",
        "a re-create at or before the DELETE's time",
        "an atomic block saving one row twice",
        "concurrent writers on one key",
        "a late copy after a later write of its row",
    ];
    let report: Vec<String> = names
        .iter()
        .zip(counts)
        .map(|(name, count)| format!("{name}: {count} of {HISTORIES}"))
        .collect();
    println!("{}", report.join("\n"));
    for (name, count) in names.iter().zip(counts) {
        assert!(
            count * 5 >= HISTORIES,
            "fewer than one history in five has {name}:\n{}",
            report.join("\n")
        );
    }
}
