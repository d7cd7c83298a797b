//! A model-based randomized test of a django-cqrs master: a history of a few rows (lives of
//! SAVEs, SYNCs and DELETEs, rows created again after their deletion) stamped, as django-cqrs
//! stamps `cqrs_updated`, by the clocks of up to three web hosts that are seconds apart (within
//! a life, consecutive stamps are equal, backwards or far apart) and carrying no `x-cqrs-seq`.
//! It is delivered to a replica with duplicates and late copies, in random batches, to one
//! consumer or to three competing on one queue (this test's runtime and two `replica_process`
//! processes, each of which must apply messages over the run); the replica must end equal to
//! the master's final state, field by field and bit for bit, `cqrs_revision` and `cqrs_updated`
//! included, and its state table must hold each row's last message. The deliveries stay outside
//! the cases docs/DESIGN.md names for messages without a sequence: stamps around a DELETE are
//! in real order (the skew at a delete is below the time between the delete and its
//! neighbours), and no message of a later life reaches a consumer before the DELETE that
//! precedes it has been applied (late copies of earlier messages may come at any time). The
//! masters of this project, whose messages carry the sequence, are tested without those limits
//! by the `master_model` test binary. Junk is mixed among the history's messages: bodies over `CQRS_MAX_BODY_SIZE` and
//! names too long for MariaDB's VARCHAR(255), SAVEs of keys of their own; each junk copy must be
//! dead-lettered (an oversized body always, a long name on MariaDB only) or applied, and must
//! touch no other row.
//!
//! `CQRS_MODEL_CASES` sets the number of cases per test (default [`DEFAULT_CASES`]), e.g.
//! `CQRS_MODEL_CASES=500 cargo test --test integration model_based`; `CQRS_MODEL_SHRINK_ITERS`
//! and `CQRS_MODEL_SHRINK_SECS` bound the shrinking of a failure (defaults
//! [`DEFAULT_SHRINK_ITERS`], [`DEFAULT_SHRINK_SECS`]). Each test prints the seed it draws its
//! cases from, and `CQRS_MODEL_SEED=<hex>` replays it; a failing case is also saved in
//! `model_based.proptest-regressions` beside this file and tried first on the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use cqrs_diesel::wire::format_timestamp;
use cqrs_diesel::{ConsumerStats, ReplicaStore, Replicas, Transport};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use uuid::Uuid;

use super::models::{AuthorRow, MysqlAuthorReplica, PgAuthorReplica, SqliteAuthorReplica};
use super::process::{Counts, ReplicaProcess};
use super::{Worker, dead_letters};
use crate::db::{MysqlDb, PgDb, SqliteDb, TestDb};

const DEFAULT_CASES: u32 = 16;
const DEFAULT_SHRINK_ITERS: u32 = 128;
const DEFAULT_SHRINK_SECS: u32 = 300;
/// How far apart the hosts' clocks are at most, in microseconds.
const MAX_SKEW_US: i64 = 3_000_000;
/// The longest a case may take to settle every message it published.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The key of a case's first junk message (the next ones follow): above every key a history
/// draws but `i32::MAX`.
const JUNK_ID: i32 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// The model: a master's history
// ---------------------------------------------------------------------------------------------

/// What a backend stores differently from the wire, and what it cannot store.
#[derive(Debug, Clone, Copy)]
struct Backend {
    name: &'static str,
    /// PostgreSQL's DOUBLE PRECISION keeps -0.0. MariaDB's DOUBLE and SQLite's REAL (which
    /// stores a float without fraction as an integer) give back 0.0 for -0.0: on those two
    /// backends -0.0 and 0.0 compare equal, every other value is compared bit for bit.
    keeps_negative_zero: bool,
    /// The year of the earliest `birth_date` drawn (the latest is 9999-12-31). The wire (like
    /// Python) covers 0001-01-01..9999-12-31, and all three backends store all of it: MariaDB
    /// documents DATE as 1000-01-01..9999-12-31 only, but stores and returns the years 0001 to
    /// 0999 unchanged (this test draws them), so no backend narrows the range.
    min_year: i32,
    /// The most characters `name` holds: MariaDB's VARCHAR(255) refuses more (its sessions run
    /// in strict mode: "Data too long"), PostgreSQL's and SQLite's TEXT have no limit.
    name_max_chars: Option<usize>,
}

const POSTGRES: Backend = Backend {
    name: "postgres",
    keeps_negative_zero: true,
    min_year: 1,
    name_max_chars: None,
};
const MARIADB: Backend = Backend {
    name: "mariadb",
    keeps_negative_zero: false,
    min_year: 1,
    name_max_chars: Some(255),
};
const SQLITE: Backend = Backend {
    name: "sqlite",
    keeps_negative_zero: false,
    min_year: 1,
    name_max_chars: None,
};

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("a valid date")
}

/// Every replicated field of an `author` row but the primary key and the cqrs fields.
#[derive(Clone, PartialEq)]
struct Fields {
    name: String,
    email: Option<String>,
    birth_date: Option<NaiveDate>,
    joined_at: DateTime<Utc>,
    active: bool,
    score: f64,
    external_id: Uuid,
    bio: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Save,
    Sync,
    Delete,
}

/// The master's final state: per key, its revision, `cqrs_updated` and values, or `None`
/// when the key's last message was a DELETE.
type Rows = BTreeMap<i32, Option<(i64, DateTime<Utc>, Fields)>>;

/// One message of the master.
#[derive(Clone)]
struct Message {
    id: i32,
    /// Its place in its key's history (for the printout: `k<id>#<seq>`).
    seq: usize,
    signal: Signal,
    revision: i64,
    /// `cqrs_updated`: the stamp of the host that wrote it.
    updated: DateTime<Utc>,
    /// When the master committed it (the master's order).
    real: DateTime<Utc>,
    /// The host whose clock stamped it.
    host: usize,
    /// The row's values; `None` for a DELETE.
    fields: Option<Fields>,
}

impl Message {
    fn label(&self) -> String {
        format!("k{}#{}", self.id, self.seq)
    }

    /// The body the master publishes.
    fn body(&self) -> Value {
        let mut data = json!({
            "id": self.id,
            "cqrs_revision": self.revision,
            "cqrs_updated": format_timestamp(&self.updated),
        });
        if let Some(fields) = &self.fields {
            let object = data.as_object_mut().expect("an object");
            for (key, value) in fields
                .wire(self.id, self.revision)
                .as_object()
                .expect("object")
            {
                object.insert(key.clone(), value.clone());
            }
        }
        json!({
            "signal_type": match self.signal {
                Signal::Save => "SAVE",
                Signal::Sync => "SYNC",
                Signal::Delete => "DELETE",
            },
            "cqrs_id": "author",
            "instance_data": data,
            "previous_data": null,
            "instance_pk": self.id,
            "correlation_id": null,
            "retries": 0,
            "expires": null,
            "meta": {},
        })
    }
}

impl Fields {
    /// `instance_data` without `cqrs_updated`, as [`AuthorRow::wire_fields`] reads a row back.
    fn wire(&self, id: i32, revision: i64) -> Value {
        use cqrs_diesel::WireValue;
        json!({
            "cqrs_revision": revision,
            "id": id,
            "name": self.name,
            "email": self.email,
            "birth_date": self.birth_date.to_wire(),
            "joined_at": format_timestamp(&self.joined_at),
            "active": self.active,
            "score": self.score,
            "external_id": self.external_id.hyphenated().to_string(),
            "bio": self.bio,
        })
    }
}

/// How a chunk of the delivery is handed to the consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Published while the consumers run.
    Running,
    /// The consumers are stopped, the chunk published, the consumers started again: the chunk
    /// waits in the queue and is taken in as few batches as the batch size allows.
    Stopped,
    /// Published while the consumers run, then every message so far is waited for.
    Settle,
}

/// One message of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// An index into [`Case::messages`].
    History(usize),
    /// An index into [`Case::junk`].
    Junk(usize),
}

#[derive(Debug)]
struct Chunk {
    mode: Mode,
    messages: Vec<Item>,
    /// Whether every message so far is waited for after this chunk (it ends with the first
    /// copy of a DELETE that a later life of its row follows).
    settle_after: bool,
}

/// What makes a junk message junk.
#[derive(Debug, Clone, Copy)]
enum JunkKind {
    /// Its body is `extra` bytes larger than `CQRS_MAX_BODY_SIZE` (the padding is in `bio`): it
    /// is dead-lettered unread.
    Oversized { extra: usize },
    /// Its `name` (more than 255 characters) does not fit MariaDB's column: dead-lettered on
    /// MariaDB, applied elsewhere.
    LongName,
}

/// A SAVE of a key no history has, mixed among the history's messages.
#[derive(Clone)]
struct Junk {
    kind: JunkKind,
    /// Its key is [`Message::id`], its values [`Message::fields`].
    message: Message,
}

impl Junk {
    fn new(id: i32, kind: JunkKind, name: String) -> Self {
        let fields = Fields {
            name,
            email: None,
            birth_date: None,
            joined_at: base(),
            active: true,
            score: 1.5,
            external_id: Uuid::nil(),
            bio: None,
        };
        Junk {
            kind,
            message: Message {
                id,
                seq: 0,
                signal: Signal::Save,
                revision: 0,
                updated: base(),
                real: base(),
                host: 0,
                fields: Some(fields),
            },
        }
    }

    fn label(&self) -> String {
        format!("j{}", self.message.id)
    }

    fn fields(&self) -> &Fields {
        self.message.fields.as_ref().expect("a SAVE")
    }

    /// Whether `backend` must dead-letter it (each copy), rather than apply it.
    fn dead_lettered(&self, backend: Backend) -> bool {
        match self.kind {
            JunkKind::Oversized { .. } => true,
            JunkKind::LongName => backend
                .name_max_chars
                .is_some_and(|max| self.fields().name.chars().count() > max),
        }
    }

    /// What a dead-letter reason of it must contain.
    fn reason(&self) -> &'static str {
        match self.kind {
            JunkKind::Oversized { .. } => "CQRS_MAX_BODY_SIZE",
            JunkKind::LongName => "Data too long",
        }
    }

    /// The body published, for a runtime reading at most `limit` bytes.
    fn body(&self, limit: usize) -> Value {
        let mut body = self.message.body();
        if let JunkKind::Oversized { extra } = self.kind {
            body["instance_data"]["bio"] = json!("");
            let size = limit + extra;
            let padding = size
                .checked_sub(body.to_string().len())
                .expect("a body shorter than the limit");
            body["instance_data"]["bio"] = Value::String("x".repeat(padding));
            assert_eq!(body.to_string().len(), size, "the oversized body's length");
        }
        body
    }
}

/// One case: the master's messages (in the order the master sent them), the junk, and their
/// delivery.
struct Case {
    messages: Vec<Message>,
    junk: Vec<Junk>,
    delivery: Vec<Chunk>,
}

impl Case {
    /// The master's final state: per key, the effect of its last message (a row, or no row
    /// after a DELETE).
    fn expected(&self) -> Rows {
        let mut out = BTreeMap::new();
        for message in &self.messages {
            // Messages are in the master's order, so the last one of a key wins.
            out.insert(
                message.id,
                message
                    .fields
                    .as_ref()
                    .map(|fields| (message.revision, message.updated, fields.clone())),
            );
        }
        out
    }

    /// The state the replica must keep for each of the history's keys: its last message's
    /// revision, time in microseconds and whether it was a DELETE.
    fn expected_states(&self) -> BTreeMap<String, (i64, i64, bool)> {
        let mut out = BTreeMap::new();
        for message in &self.messages {
            out.insert(
                message.id.to_string(),
                (
                    message.revision,
                    message.updated.timestamp_micros(),
                    message.signal == Signal::Delete,
                ),
            );
        }
        out
    }

    /// The final state of the history's keys (see [`expected`](Self::expected)) and of the
    /// junk's: a row with its values where `backend` applies it, none where it dead-letters it.
    fn expected_on(&self, backend: Backend) -> Rows {
        let mut out = self.expected();
        for junk in &self.junk {
            let row = (!junk.dead_lettered(backend)).then(|| (0, base(), junk.fields().clone()));
            out.insert(junk.message.id, row);
        }
        out
    }

    fn published(&self) -> usize {
        self.delivery.iter().map(|chunk| chunk.messages.len()).sum()
    }

    /// The copies delivered of each junk message.
    fn junk_copies(&self) -> Vec<u64> {
        let mut out = vec![0; self.junk.len()];
        for chunk in &self.delivery {
            for item in &chunk.messages {
                if let Item::Junk(j) = item {
                    out[*j] += 1;
                }
            }
        }
        out
    }

    /// The dead letters `backend` must publish, per junk key (every copy of a junk message it
    /// refuses; nothing else).
    fn dead_letters_on(&self, backend: Backend) -> BTreeMap<i32, u64> {
        self.junk
            .iter()
            .zip(self.junk_copies())
            .filter(|(junk, copies)| junk.dead_lettered(backend) && *copies > 0)
            .map(|(junk, copies)| (junk.message.id, copies))
            .collect()
    }

    /// The oversized copies delivered: each is counted as malformed.
    fn oversized_copies(&self) -> u64 {
        self.junk
            .iter()
            .zip(self.junk_copies())
            .filter(|(junk, _)| matches!(junk.kind, JunkKind::Oversized { .. }))
            .map(|(_, copies)| copies)
            .sum()
    }

    fn label(&self, item: Item) -> String {
        match item {
            Item::History(i) => self.messages[i].label(),
            Item::Junk(j) => self.junk[j].label(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A compact printout (proptest prints the minimal failing case with it)
// ---------------------------------------------------------------------------------------------

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 18, 0, 0)
        .single()
        .expect("a valid base time")
}

/// `"…"` of at most 60 characters, with the length when shortened.
fn short(s: &str) -> String {
    clip(s, 60)
}

/// `"…"` of at most `max` characters, with the length when shortened.
fn clip(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head:?}…({count} chars)")
    }
}

/// A JSON value on one line, every string in it [`short`]ened.
fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => short(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(compact).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(object) => {
            let entries: Vec<String> = object
                .iter()
                .map(|(key, value)| format!("{key}: {}", compact(value)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{name {} email {} birth {} joined {} active {} score {:?} ({:#018x}) ext {} bio {}}}",
            short(&self.name),
            self.email.as_deref().map_or("null".into(), short),
            self.birth_date
                .map_or("null".into(), |d| d.format("%Y-%m-%d").to_string()),
            format_timestamp(&self.joined_at),
            self.active,
            self.score,
            self.score.to_bits(),
            self.external_id,
            self.bio.as_deref().map_or("null".into(), short),
        )
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.updated - base();
        let micros = offset.num_microseconds().unwrap_or(i64::MAX);
        write!(
            f,
            "{} {:?} r{} @base+{}.{:06}s (host {})",
            self.label(),
            self.signal,
            self.revision,
            micros.div_euclid(1_000_000),
            micros.rem_euclid(1_000_000),
            self.host,
        )?;
        if let Some(fields) = &self.fields {
            write!(f, " {fields:?}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history (master order, base {}):",
            format_timestamp(&base())
        )?;
        for message in &self.messages {
            writeln!(f, "  {message:?}")?;
        }
        if !self.junk.is_empty() {
            writeln!(f, "junk (SAVEs r0 @base+0s, their other fields fixed):")?;
        }
        for junk in &self.junk {
            match junk.kind {
                JunkKind::Oversized { extra } => writeln!(
                    f,
                    "  {} a body of CQRS_MAX_BODY_SIZE + {extra} bytes",
                    junk.label()
                )?,
                JunkKind::LongName => {
                    writeln!(f, "  {} name {}", junk.label(), short(&junk.fields().name))?;
                }
            }
        }
        write!(f, "delivery:")?;
        for chunk in &self.delivery {
            let labels: Vec<String> = chunk.messages.iter().map(|&i| self.label(i)).collect();
            let settle = if chunk.settle_after { " |settle" } else { "" };
            write!(f, " [{:?}: {}{settle}]", chunk.mode, labels.join(" "))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------
//
// Shrinking must reach small cases in a few hundred runs (each is a real round trip through the
// broker and a database): text is drawn as a length and a seed (integers shrink by bisection,
// a vector of characters one element at a time), structure (keys, lives, states, copies,
// chunks) comes before values, and nothing depends on a `prop_flat_map`, which would draw the
// dependent part anew at every step.

/// A small deterministic generator (SplitMix64) for the characters of a text.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Characters drawn more often than chance would: astral-plane (emoji, musical symbols,
/// Gothic, a tag character, the last scalar value), combining, format (ZWJ, BOM), bidi, case
/// oddities and characters SQL and JSON escape.
const ODD_CHARS: &str = "😀𝄞𐍈🀄🏳\u{E0041}\u{10FFFF}\u{1D11E}\u{0301}\u{200D}\u{FEFF}\u{202E}\u{00A0}ßİﬀ'\"\\%_\n\t\u{7F}\u{1B}";

/// `len` characters from `seed`: mostly printable ASCII, else any scalar value but NUL
/// (PostgreSQL's text cannot hold it), else one of [`ODD_CHARS`]; only printable ASCII when
/// `ascii`.
fn text(len: usize, seed: u64, ascii: bool) -> String {
    let mut rng = SplitMix(seed);
    (0..len)
        .map(|_| match rng.below(if ascii { 1 } else { 8 }) {
            0..=4 => char::from(b' ' + rng.below(95) as u8),
            5 | 6 => loop {
                let code = 1 + rng.below(0x10_FFFF) as u32;
                if let Some(c) = char::from_u32(code) {
                    break c;
                }
            },
            _ => {
                let count = ODD_CHARS.chars().count() as u64;
                ODD_CHARS
                    .chars()
                    .nth(rng.below(count) as usize)
                    .unwrap_or('?')
            }
        })
        .collect()
}

/// A name: at most 40 characters, within MariaDB's VARCHAR(255) (a count of characters;
/// utf8mb4 holds astral ones).
fn name() -> impl Strategy<Value = String> {
    (0usize..=40, any::<u64>()).prop_map(|(len, seed)| text(len, seed, false))
}

/// A bio: short, or a few KiB (within MariaDB's TEXT, 65 535 bytes: 4 000 characters of at
/// most 4 bytes).
fn bio() -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => 0usize..=100, 1 => 1_000usize..=4_000],
        any::<u64>(),
    )
        .prop_map(|(len, seed)| text(len, seed, false))
}

/// An email: printable ASCII, within MariaDB's VARCHAR(255).
fn email() -> impl Strategy<Value = String> {
    (0usize..=60, any::<u64>()).prop_map(|(len, seed)| text(len, seed, true))
}

fn date(min_year: i32) -> impl Strategy<Value = NaiveDate> {
    let min = ymd(min_year, 1, 1);
    let max = ymd(9999, 12, 31);
    prop_oneof![
        3 => (min.num_days_from_ce()..=max.num_days_from_ce())
            .prop_map(|days| NaiveDate::from_num_days_from_ce_opt(days).expect("a day")),
        1 => prop::sample::select(vec![
            ymd(1970, 1, 1),
            min,
            max,
            ymd(2000, 2, 29),
            ymd(1900, 3, 1),
        ]),
    ]
}

/// A timestamp to the microsecond, 1970-01-01..2100-01-01.
fn joined_at() -> impl Strategy<Value = DateTime<Utc>> {
    const END: i64 = 4_102_444_800_000_000; // 2100-01-01 00:00:00
    prop_oneof![
        4 => 0..END,
        1 => prop::sample::select(vec![0, 1, 999_999, 1_000_000, END - 1]),
    ]
    .prop_map(|micros| DateTime::from_timestamp_micros(micros).expect("in range"))
}

/// Any finite f64 (the master refuses NaN and infinities), special values more often.
fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |f| f.is_finite()),
        1 => prop::sample::select(vec![
            0.0,
            -0.0,
            1.5,
            -1.0,
            0.1,
            f64::MIN_POSITIVE,
            f64::from_bits(1),                       // the smallest subnormal
            -f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal, negative
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            9_007_199_254_740_993.0, // 2^53 + 1 (rounds to 2^53)
            1e300,
            -1e-300,
        ]),
    ]
}

fn fields(min_year: i32) -> impl Strategy<Value = Fields> {
    (
        name(),
        prop::option::of(email()),
        prop::option::of(date(min_year)),
        joined_at(),
        any::<bool>(),
        score(),
        any::<u128>(),
        prop::option::of(bio()),
    )
        .prop_map(
            |(name, email, birth_date, joined_at, active, score, random, bio)| Fields {
                name,
                email,
                birth_date,
                joined_at,
                active,
                score,
                external_id: uuid::Builder::from_random_bytes(random.to_le_bytes()).into_uuid(),
                bio,
            },
        )
}

/// A step of real time between two writes of a row, in microseconds: none (two writes in the
/// same microsecond), or 1 us to 5 s.
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        1i64..=10,
        1i64..=1_000,
        1i64..=1_000_000,
        1i64..=5_000_000
    ]
}

/// The master's hosts: how far each one's clock is from the real time, in microseconds.
type Skews = [i64; 3];

fn skews() -> impl Strategy<Value = Skews> {
    prop::array::uniform3(prop_oneof![
        1 => Just(0i64),
        3 => -MAX_SKEW_US..=MAX_SKEW_US,
    ])
}

/// One state of a row: its values, the real time step before it, the host that writes it
/// (whose clock stamps it), whether a SYNC of it follows.
type State = (Fields, i64, usize, bool);
/// One life of a row: its create and updates, then the time step before its DELETE.
type Life = (Vec<State>, i64);
/// One key's history: the time of its first write after the base, its lives, whether the last
/// life is deleted too.
type KeyLives = (i64, Vec<Life>, bool);

fn key_lives(min_year: i32) -> impl Strategy<Value = KeyLives> {
    let state = (
        fields(min_year),
        step(),
        0usize..3,
        prop::bool::weighted(0.25),
    );
    let life = (prop::collection::vec(state, 1..=5), step());
    (
        0i64..=10_000_000,
        prop::collection::vec(life, 1..=3),
        any::<bool>(),
    )
}

/// The messages of one key, as a django-cqrs master on hosts with clocks `skews` sends them.
fn key_messages(id: i32, (start, lives, last_deleted): KeyLives, skews: &Skews) -> Vec<Message> {
    let micros = chrono::Duration::microseconds;
    let mut real = base() + micros(start);
    let mut out = Vec::new();
    // The stamp of the DELETE the current life follows.
    let mut floor: Option<DateTime<Utc>> = None;
    let last = lives.len() - 1;
    for (n, (states, delete_step)) in lives.into_iter().enumerate() {
        // A life starts again at revision 0, as django-cqrs masters do.
        let mut revision = 0i64;
        let mut latest = floor;
        for (fields, step, host, sync) in states {
            real += micros(step);
            // The host's clock; after the DELETE the life follows (the skew at a delete is
            // below the time around it: docs/DESIGN.md, cases A and B).
            let mut updated = real + micros(skews[host]);
            if let Some(floor) = floor {
                updated = updated.max(floor + micros(1));
            }
            latest = latest.max(Some(updated));
            let signals: &[Signal] = if sync {
                &[Signal::Save, Signal::Sync]
            } else {
                &[Signal::Save]
            };
            for &signal in signals {
                // A SYNC carries the current state: its revision and its cqrs_updated.
                out.push(Message {
                    id,
                    seq: out.len(),
                    signal,
                    revision,
                    updated,
                    real,
                    host,
                    fields: Some(fields.clone()),
                });
            }
            revision += 1;
        }
        if n < last || last_deleted {
            real += micros(delete_step);
            // Stamped after every write of the life it ends.
            let mut updated = real + micros(skews[0]);
            if let Some(latest) = latest {
                updated = updated.max(latest + micros(1));
            }
            out.push(Message {
                id,
                seq: out.len(),
                signal: Signal::Delete,
                revision, // the last revision + 1
                updated,
                real,
                host: 0,
                fields: None,
            });
            floor = Some(updated);
        }
    }
    out
}

/// 1 to 6 keys (a key drawn twice is kept once), mostly small, sometimes at the edges of
/// INTEGER.
fn keys(min_year: i32) -> impl Strategy<Value = Vec<(i32, KeyLives)>> {
    let id = prop_oneof![
        6 => 1i32..=6,
        1 => prop::sample::select(vec![0, -1, i32::MAX, i32::MIN]),
    ];
    prop::collection::vec((id, key_lives(min_year)), 1..=6)
}

/// The most messages a history has: 6 keys, 3 lives of 5 states with a SYNC each and a DELETE.
const MAX_MESSAGES: usize = 6 * 3 * (5 * 2 + 1);

/// How the messages are delivered: how far copies move (0: the master's order; 1 000: any
/// order), the copies of each message (1 to 3, each with its own displacement; messages past
/// the vector's end once, in place), and the chunks (length and [`Mode`]; the last chunk takes
/// the rest).
type DeliveryPlan = (u64, Vec<Vec<u64>>, Vec<(usize, Mode)>);

fn delivery_plan() -> impl Strategy<Value = DeliveryPlan> {
    let copies = prop_oneof![
        4 => prop::collection::vec(0u64..=1_000, 1..=1),
        1 => prop::collection::vec(0u64..=1_000, 2..=3),
    ];
    let mode = prop_oneof![Just(Mode::Running), Just(Mode::Stopped), Just(Mode::Settle)];
    (
        prop::sample::select(vec![0u64, 2, 10, 1_000]),
        prop::collection::vec(copies, 0..=MAX_MESSAGES),
        prop::collection::vec((1usize..=16, mode), 1..=8),
    )
}

/// The positions of a junk message's copies in the delivery, from 0 (first) to 1 000 (last): one
/// copy, sometimes two.
type Positions = Vec<u64>;

/// The junk of a case: bodies over the size limit (the bytes beyond it, the copies) and long
/// names (their length and seed, the copies). At most 2 of each; the oversized ones are rarer
/// (each costs the publishing of a MiB, twice: to the queue and to the dead-letter queue): 1 in
/// 12 cases has 2, nearly a half none. Every part shrinks by removing elements first.
type JunkPlan = (Vec<(usize, Positions)>, Vec<(usize, u64, Positions)>);

fn positions() -> impl Strategy<Value = Positions> {
    prop_oneof![
        4 => prop::collection::vec(0u64..=1_000, 1..=1),
        1 => prop::collection::vec(0u64..=1_000, 2..=2),
    ]
}

fn oversized() -> impl Strategy<Value = (usize, Positions)> {
    // 1 byte over the limit, or up to 1 KiB.
    (
        prop_oneof![1 => Just(1usize), 3 => 1usize..=1_024],
        positions(),
    )
}

fn junk_plan() -> impl Strategy<Value = JunkPlan> {
    (
        prop_oneof![
            3 => prop::collection::vec(oversized(), 0..=1),
            1 => prop::collection::vec(oversized(), 0..=2),
        ],
        // Over 255 characters (any, astral ones too: MariaDB counts characters). A small seed
        // is bisected in a few steps: its text matters less than a history's.
        prop::collection::vec((256usize..=400, 0u64..=1_000, positions()), 0..=2),
    )
}

/// The junk messages of `plan`, keyed from [`JUNK_ID`] on, and their copies: (position, index
/// into the junk).
fn junk(plan: JunkPlan) -> (Vec<Junk>, Vec<(u64, usize)>) {
    let (oversized, long_names) = plan;
    let mut junk = Vec::new();
    let mut copies = Vec::new();
    let mut add = |kind, name, positions: Positions| {
        let id = JUNK_ID + i32::try_from(junk.len()).expect("few junk messages");
        copies.extend(positions.into_iter().map(|position| (position, junk.len())));
        junk.push(Junk::new(id, kind, name));
    };
    for (extra, positions) in oversized {
        add(
            JunkKind::Oversized { extra },
            "oversized".to_owned(),
            positions,
        );
    }
    for (len, seed, positions) in long_names {
        add(JunkKind::LongName, text(len, seed, false), positions);
    }
    (junk, copies)
}

/// The delivery of `messages` by `plan`, with the `junk` copies (position, index) among them.
/// The first copy of a DELETE keeps its place (nothing of a later life of its row overtakes
/// it), and when a later life of its row follows, every message so far is waited for after it.
fn deliver(
    messages: &[Message],
    (spread, copies, cuts): DeliveryPlan,
    junk: &[(u64, usize)],
) -> Vec<Chunk> {
    let mut order: Vec<(u64, usize)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        match copies.get(i) {
            Some(noise) => {
                for (c, noise) in noise.iter().enumerate() {
                    let on_time = c == 0 && message.signal == Signal::Delete;
                    let noise = if on_time { 0 } else { *noise };
                    order.push((i as u64 * 1_000 + noise * spread, i));
                }
            }
            None => order.push((i as u64 * 1_000, i)),
        }
    }
    order.sort();
    // A junk copy at position p (of 1 000) goes after p/1000 of the history's copies, before
    // the history's copy at that place.
    let len = order.len() as u64;
    let mut placed: Vec<(u64, bool, Item)> = order
        .into_iter()
        .enumerate()
        .map(|(place, (_, i))| (place as u64 * 1_000, true, Item::History(i)))
        .chain(
            junk.iter()
                .map(|&(position, j)| (position * len, false, Item::Junk(j))),
        )
        .collect();
    placed.sort_by_key(|&(place, history, _)| (place, history));
    let items: Vec<Item> = placed.into_iter().map(|(_, _, item)| item).collect();

    // After the first copy of each DELETE that a later message of its row follows.
    let mut seen = BTreeSet::new();
    let barriers: Vec<usize> = items
        .iter()
        .enumerate()
        .filter_map(|(at, item)| match *item {
            Item::History(i) if seen.insert(i) => {
                let message = &messages[i];
                let later_life = messages[i + 1..].iter().any(|m| m.id == message.id);
                (message.signal == Signal::Delete && later_life).then_some(at)
            }
            _ => None,
        })
        .collect();

    let mut chunks = Vec::new();
    let mut barriers = barriers.into_iter().peekable();
    let mut at = 0;
    for (n, &(len, mode)) in cuts.iter().enumerate() {
        if at >= items.len() {
            break;
        }
        let end = if n + 1 == cuts.len() {
            items.len()
        } else {
            (at + len).min(items.len())
        };
        while at < end {
            let (stop, settle_after) = match barriers.peek() {
                Some(&barrier) if barrier < end => {
                    barriers.next();
                    (barrier + 1, true)
                }
                _ => (end, false),
            };
            chunks.push(Chunk {
                mode,
                messages: items[at..stop].to_vec(),
                settle_after,
            });
            at = stop;
        }
    }
    chunks
}

/// A case. The junk comes first: proptest shrinks a tuple's parts in order, so junk that plays
/// no part in a failure goes away in the first steps.
fn case(backend: Backend) -> impl Strategy<Value = Case> {
    (
        junk_plan(),
        skews(),
        keys(backend.min_year),
        delivery_plan(),
    )
        .prop_map(|(junk_plan, skews, keys, plan)| {
            let mut seen = BTreeSet::new();
            let mut messages: Vec<Message> = keys
                .into_iter()
                .filter(|(id, _)| seen.insert(*id))
                .flat_map(|(id, lives)| key_messages(id, lives, &skews))
                .collect();
            // The master's order is by real time; a row's messages keep theirs, and a SYNC stays
            // after the SAVE of its time (a stable sort).
            messages.sort_by_key(|m| m.real);
            let (junk, junk_copies) = junk(junk_plan);
            let delivery = deliver(&messages, plan, &junk_copies);
            Case {
                messages,
                junk,
                delivery,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// What runtimes settled.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    applied: u64,
    dead_lettered: u64,
    /// Of the dead-lettered, those that could not be read (here: the oversized bodies).
    malformed: u64,
}

impl Tally {
    fn add(&mut self, stats: &ConsumerStats) {
        self.applied += stats.applied();
        self.dead_lettered += stats.dead_lettered;
        self.malformed += stats.malformed;
    }

    fn add_counts(&mut self, counts: Counts) {
        self.applied += counts.applied;
        self.dead_lettered += counts.dead_lettered;
        self.malformed += counts.malformed;
    }

    fn settled(&self) -> u64 {
        self.applied + self.dead_lettered
    }
}

/// The consumers of one case: the worker's runtime in this process and `consumers - 1`
/// [`ReplicaProcess`]es, each a process of its own with its own AMQP connection and database
/// connections, competing on the worker's queue. A failed message is dead-lettered at once
/// (`max_retries` 0), in every process: the worker's configuration is theirs.
struct Consumers<D: TestDb, M> {
    worker: Worker<D>,
    processes: usize,
    extra: Vec<ReplicaProcess>,
    running: bool,
    /// What the runtimes stopped so far settled.
    done: Tally,
    /// Messages applied per consumer slot (the worker first, then each process's place),
    /// by the runtimes stopped so far.
    slots: Vec<u64>,
    _model: std::marker::PhantomData<fn() -> M>,
}

impl<D, M> Consumers<D, M>
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    async fn start(db: D, consumers: usize) -> Self {
        let replicas = Replicas::new(db.connector()).register::<M>();
        let worker = Worker::start_with(db, M::DDL, replicas, |builder| {
            let builder = builder
                .max_retries(Some(0))
                .retry_delay(Duration::from_millis(10));
            // A small prefetch, so that each competing consumer gets messages.
            if consumers > 1 {
                builder.prefetch(4)
            } else {
                builder
            }
        })
        .await;
        let mut this = Consumers {
            worker,
            processes: consumers.saturating_sub(1),
            extra: Vec::new(),
            running: true,
            done: Tally::default(),
            slots: vec![0; consumers.max(1)],
            _model: std::marker::PhantomData,
        };
        this.spawn_extra();
        this
    }

    fn spawn_extra(&mut self) {
        let db_env = self.worker.db.process_env();
        for _ in 0..self.processes {
            self.extra
                .push(ReplicaProcess::spawn(&self.worker.config, &db_env));
        }
    }

    async fn stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let stats = self.worker.stop().await;
        self.done.add(&stats);
        self.slots[0] += stats.applied();
        let mut result = Ok(());
        for (slot, process) in std::mem::take(&mut self.extra).into_iter().enumerate() {
            match tokio::task::spawn_blocking(move || process.stop()).await {
                Ok(Ok(counts)) => {
                    self.done.add_counts(counts);
                    self.slots[slot + 1] += counts.applied;
                }
                Ok(Err(error)) => result = Err(format!("a replica process: {error}")),
                Err(error) => result = Err(format!("stopping a replica process: {error}")),
            }
        }
        result
    }

    fn restart(&mut self) {
        assert!(!self.running);
        self.worker
            .restart(Replicas::new(self.worker.db.connector()).register::<M>());
        self.spawn_extra();
        self.running = true;
    }

    /// What every consumer settled, stopped or running.
    fn settled(&self) -> Tally {
        let mut out = self.done;
        if self.running {
            out.add(&self.worker.stats());
            for process in &self.extra {
                out.add_counts(process.counts());
            }
        }
        out
    }

    async fn wait_settled(&self, n: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let tally = self.settled();
            if tally.settled() >= n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "timed out waiting for {n} messages settled: {} applied, {} dead-lettered",
                    tally.applied, tally.dead_lettered,
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops everything and closes the worker's connection.
    async fn finish(&mut self) -> Result<(), String> {
        let result = self.stop().await;
        self.worker.transport.close().await;
        result
    }
}

/// Compares the replica's rows with the master's final state (`junk` names the junk keys);
/// `Err` lists the differences.
fn compare<M: AuthorRow>(
    backend: Backend,
    rows: &[M],
    expected: &Rows,
    junk: &BTreeSet<i32>,
) -> Result<(), String> {
    let key = |id: &i32| {
        if junk.contains(id) {
            format!("junk key {id}")
        } else {
            format!("key {id}")
        }
    };
    let mut problems = Vec::new();
    let mut stored: BTreeMap<i32, &M> = BTreeMap::new();
    for row in rows {
        stored.insert(row.id(), row);
    }
    for (id, row) in &stored {
        if !matches!(expected.get(id), Some(Some(_))) {
            problems.push(format!(
                "{}: the replica has a row, the master has none: r{} {}",
                key(id),
                row.revision(),
                compact(&row.wire_fields()),
            ));
        }
    }
    for (id, want) in expected {
        let Some((revision, updated, fields)) = want else {
            continue;
        };
        let Some(row) = stored.get(id) else {
            problems.push(format!(
                "{}: the replica has no row, the master has r{revision} {fields:?}",
                key(id)
            ));
            continue;
        };
        let (got_updated, want_updated) = (row.updated_wire(), json!(format_timestamp(updated)));
        if got_updated != want_updated {
            problems.push(format!(
                "{}: cqrs_updated: the replica has {got_updated}, the master {want_updated}",
                key(id)
            ));
        }
        let got = row.wire_fields();
        let want = fields.wire(*id, *revision);
        for (field, want_value) in want.as_object().expect("an object") {
            let got_value = &got[field.as_str()];
            let same = if field == "score" {
                let got_score = got_value.as_f64();
                let want_score = fields.score;
                got_score.is_some_and(|got_score| {
                    got_score.to_bits() == want_score.to_bits()
                        || (!backend.keeps_negative_zero && got_score == 0.0 && want_score == 0.0)
                })
            } else {
                got_value == want_value
            };
            if !same {
                let bits = |v: &Value| {
                    v.as_f64()
                        .map(|f| format!(" ({:#018x})", f.to_bits()))
                        .unwrap_or_default()
                };
                let show = |v: &Value| match v {
                    Value::String(s) => short(s),
                    other => other.to_string(),
                };
                problems.push(format!(
                    "{}: {field}: the replica has {}{}, the master {}{}",
                    key(id),
                    show(got_value),
                    if field == "score" {
                        bits(got_value)
                    } else {
                        String::new()
                    },
                    show(want_value),
                    if field == "score" {
                        bits(want_value)
                    } else {
                        String::new()
                    },
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Compares the replica's states of the history's keys with their last messages.
fn compare_states(
    states: &[(String, i64, i64, bool)],
    expected: &BTreeMap<String, (i64, i64, bool)>,
) -> Result<(), String> {
    let got: BTreeMap<&str, (i64, i64, bool)> = states
        .iter()
        .filter(|(pk, ..)| expected.contains_key(pk))
        .map(|(pk, revision, updated_us, deleted)| {
            (pk.as_str(), (*revision, *updated_us, *deleted))
        })
        .collect();
    let mut problems = Vec::new();
    for (pk, want) in expected {
        match got.get(pk.as_str()) {
            Some(have) if have == want => {}
            have => problems.push(format!(
                "key {pk}: state (revision, cqrs_updated µs, deleted) {have:?}, expected {want:?}"
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

async fn run_case<D, M>(
    backend: Backend,
    db: D,
    consumers: usize,
    case: &Case,
) -> Result<Vec<u64>, String>
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let mut running = Consumers::<D, M>::start(db, consumers).await;
    let result = deliver_and_check(backend, &mut running, case).await;
    let finished = running.finish().await;
    result.and(finished).map(|()| running.slots.clone())
}

async fn deliver_and_check<D, M>(
    backend: Backend,
    consumers: &mut Consumers<D, M>,
    case: &Case,
) -> Result<(), String>
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    let limit = consumers.worker.config.max_body_size();
    let bodies: Vec<Value> = case.messages.iter().map(Message::body).collect();
    let junk_bodies: Vec<Value> = case.junk.iter().map(|junk| junk.body(limit)).collect();
    let mut published = 0u64;
    for chunk in &case.delivery {
        if chunk.mode == Mode::Stopped {
            consumers.stop().await?;
        }
        for &item in &chunk.messages {
            let body = match item {
                Item::History(i) => &bodies[i],
                Item::Junk(j) => &junk_bodies[j],
            };
            consumers.worker.broadcast(body).await;
            published += 1;
        }
        match chunk.mode {
            Mode::Running => {}
            Mode::Stopped => consumers.restart(),
            Mode::Settle => consumers.wait_settled(published).await?,
        }
        if chunk.settle_after {
            consumers.wait_settled(published).await?;
        }
    }
    assert_eq!(published, case.published() as u64);
    consumers.wait_settled(published).await?;
    let tally = consumers.settled();
    let mut problems = Vec::new();

    // Dead-lettered: every copy of the junk this backend refuses, nothing else.
    let want_dead = case.dead_letters_on(backend);
    let want_dead_total: u64 = want_dead.values().sum();
    let want_malformed = case.oversized_copies();
    if (tally.dead_lettered, tally.malformed) != (want_dead_total, want_malformed) {
        problems.push(format!(
            "{} dead-lettered ({} of them unreadable), expected {want_dead_total} \
             ({want_malformed} unreadable)",
            tally.dead_lettered, tally.malformed,
        ));
    }
    let queue = consumers
        .worker
        .config
        .dead_letter_queue()
        .expect("a dead-letter queue");
    let mut got_dead: BTreeMap<i32, u64> = BTreeMap::new();
    for (body, reason) in dead_letters(queue).await {
        let id = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|body| body["instance_pk"].as_i64())
            .and_then(|id| i32::try_from(id).ok());
        let junk = id.and_then(|id| case.junk.iter().find(|junk| junk.message.id == id));
        match junk {
            Some(junk) if want_dead.contains_key(&junk.message.id) => {
                *got_dead.entry(junk.message.id).or_default() += 1;
                if !reason.contains(junk.reason()) {
                    problems.push(format!(
                        "{} was dead-lettered for {}, not for {:?}",
                        junk.label(),
                        clip(&reason, 300),
                        junk.reason(),
                    ));
                }
            }
            _ => problems.push(format!(
                "an unexpected dead letter ({} bytes, key {}): {}: {}",
                body.len(),
                id.map_or("?".into(), |id| id.to_string()),
                clip(&reason, 300),
                clip(&body, 200),
            )),
        }
    }
    // (Only the expected keys are counted: the others are reported above.)
    if got_dead != want_dead {
        problems.push(format!(
            "dead letters per junk key: {got_dead:?} in the dead-letter queue, expected \
             {want_dead:?}"
        ));
    }

    // The rows: the history's keys as the master left them, the junk's as the backend takes it.
    let expected = case.expected_on(backend);
    let junk_ids: BTreeSet<i32> = case.junk.iter().map(|junk| junk.message.id).collect();
    // Each message settled once means every one has been applied. More settled than published
    // means a message counted twice (applied, then delivered again because its acknowledgement
    // was lost), which could leave another one in flight: then a mismatch is looked at again
    // for a little while.
    let patience = if tally.settled() > published {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + patience;
    let expected_states = case.expected_states();
    loop {
        let mut conn = consumers.worker.db.connect();
        let rows = M::load_all(&mut conn);
        let states = M::load_states(&mut conn);
        let compared = compare(backend, &rows, &expected, &junk_ids)
            .and(compare_states(&states, &expected_states));
        match compared {
            Ok(()) => break,
            Err(differences) if tokio::time::Instant::now() >= deadline => {
                problems.push(format!(
                    "the replica differs from the master's final state:\n{differences}"
                ));
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "on {} with {} consumer(s), {} applied and {} dead-lettered of {published} \
             published:\n{}",
            backend.name,
            consumers.processes + 1,
            tally.applied,
            tally.dead_lettered,
            problems.join("\n"),
        ))
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

/// The seed of a test's cases: `CQRS_MODEL_SEED` (64 hex digits), else a new random one.
fn seed() -> [u8; 32] {
    match std::env::var("CQRS_MODEL_SEED") {
        Ok(hex) => {
            let hex = hex.trim();
            assert!(
                hex.len() == 64 && hex.is_ascii(),
                "CQRS_MODEL_SEED={hex:?}: expected 64 hex digits"
            );
            let mut seed = [0u8; 32];
            for (i, byte) in seed.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .unwrap_or_else(|_| panic!("CQRS_MODEL_SEED={hex:?}: expected hex digits"));
            }
            seed
        }
        Err(_) => {
            let mut seed = [0u8; 32];
            for byte in &mut seed {
                *byte = fastrand::u8(..);
            }
            seed
        }
    }
}

/// Runs the property: `CQRS_MODEL_CASES` cases on `backend`, each on a fresh database from
/// `new_db` and a fresh worker (its own exchange and queues) with `consumers` consumers. With
/// several consumers, each must have applied messages over the run.
fn check<D, M>(backend: Backend, consumers: usize, new_db: fn() -> D)
where
    D: TestDb,
    M: AuthorRow<Conn = D::Conn> + ReplicaStore<D::Conn>,
{
    use proptest::test_runner::{FileFailurePersistence, RngAlgorithm, TestRng};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    // Failing cases are kept beside this file and tried first on the next run.
    let regressions: &'static str = Box::leak(
        format!(
            "{}/integration/replica/model_based.proptest-regressions",
            env!("CARGO_MANIFEST_DIR")
        )
        .into_boxed_str(),
    );
    let config = ProptestConfig {
        cases: env_u32("CQRS_MODEL_CASES", DEFAULT_CASES),
        max_shrink_iters: env_u32("CQRS_MODEL_SHRINK_ITERS", DEFAULT_SHRINK_ITERS),
        max_shrink_time: env_u32("CQRS_MODEL_SHRINK_SECS", DEFAULT_SHRINK_SECS) * 1_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::default()
    };
    let seed = seed();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    eprintln!(
        "{} with {consumers} consumer(s): CQRS_MODEL_SEED={hex}",
        backend.name
    );
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let slots = std::sync::Mutex::new(vec![0u64; consumers.max(1)]);
    let result = runner.run(&case(backend), |case| {
        let applied = runtime
            .block_on(run_case::<D, M>(backend, new_db(), consumers, &case))
            .map_err(TestCaseError::fail)?;
        let mut slots = slots.lock().expect("not poisoned");
        for (total, applied) in slots.iter_mut().zip(applied) {
            *total += applied;
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!(
            "{} with {consumers} consumer(s), replay with CQRS_MODEL_SEED={hex}: {error}",
            backend.name
        );
    }
    let slots = slots.into_inner().expect("not poisoned");
    assert!(
        slots.iter().all(|&applied| applied > 0),
        "every consumer must apply messages: applied per consumer {slots:?}"
    );
}

#[test]
fn replica_converges_to_the_master_on_postgres_with_one_consumer() {
    check::<_, PgAuthorReplica>(POSTGRES, 1, || PgDb::new("mb"));
}

#[test]
fn replica_converges_to_the_master_on_postgres_with_three_consumers() {
    check::<_, PgAuthorReplica>(POSTGRES, 3, || PgDb::new("mb"));
}

#[test]
fn replica_converges_to_the_master_on_mariadb_with_one_consumer() {
    check::<_, MysqlAuthorReplica>(MARIADB, 1, || MysqlDb::new("mb"));
}

#[test]
fn replica_converges_to_the_master_on_mariadb_with_three_consumers() {
    check::<_, MysqlAuthorReplica>(MARIADB, 3, || MysqlDb::new("mb"));
}

#[test]
fn replica_converges_to_the_master_on_sqlite_with_one_consumer() {
    check::<_, SqliteAuthorReplica>(SQLITE, 1, || SqliteDb::new("mb"));
}

#[test]
fn replica_converges_to_the_master_on_sqlite_with_three_consumers() {
    check::<_, SqliteAuthorReplica>(SQLITE, 3, || SqliteDb::new("mb"));
}
