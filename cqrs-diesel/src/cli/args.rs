//! The command line: clap definitions and the parsing of filters.
//!
//! Every command also takes django-cqrs 3.1.0's own flag spellings under its django-cqrs name
//! (`cqrs_sync -cid author -f '{"id__in": [1]}' -p`): the long and one-letter ones are clap
//! names and shorts, so they work wherever [`command`](super::command) is parsed; the
//! spellings clap cannot declare (`-cid`, and `-f` for `--force` in bulk-dump) are rewritten by
//! [`django_spellings`] before parsing, which only [`Cli::run_from`](super::Cli::run_from) and
//! [`Cli::try_run_from`](super::Cli::try_run_from) do.

use std::ffi::OsString;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Arg, ArgAction, Args, Parser, Subcommand};
use serde_json::Value;

use super::CliError;
use crate::master::RowFilter;

/// The operator commands of a cqrs-diesel service (the counterparts of django-cqrs's
/// management commands).
#[derive(Debug, Parser)]
#[command(
    name = "cqrs",
    about = "CQRS operator commands: sync, bulk dump and load, diffs, dead letters, consumer and relay",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub(crate) struct CliArgs {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publish a SYNC of the selected master rows, to every replica or to one queue.
    #[command(alias = "cqrs_sync")]
    Sync(SyncArgs),
    /// Write the selected master rows to a file: the cqrs_id, then one instance_data JSON
    /// object per line (no broker involved).
    #[command(alias = "cqrs_bulk_dump")]
    BulkDump(BulkDumpArgs),
    /// Write the records of a bulk dump into the replica table, as SYNCs would (no broker
    /// involved); each batch in one transaction.
    #[command(alias = "cqrs_bulk_load")]
    BulkLoad(BulkLoadArgs),
    /// Master, step 1 of 3: write `<cqrs_id>,<time>` then `[[pk, revision], ...]` per batch.
    #[command(alias = "cqrs_diff_master")]
    DiffMaster(DiffMasterArgs),
    /// Replica, step 2 of 3: read diff-master's output, write the primary keys whose revision
    /// differs or that are missing here.
    #[command(alias = "cqrs_diff_replica")]
    DiffReplica(PipeArgs),
    /// Master, step 3 of 3: read diff-replica's output, publish SYNCs of those rows to the
    /// replica's queue.
    #[command(alias = "cqrs_diff_sync")]
    DiffSync(DiffSyncArgs),
    /// Replica, step 1 of 3: write `<cqrs_id>,<time>` then the replica's primary keys per batch.
    #[command(alias = "cqrs_deleted_diff_replica")]
    DeletedDiffReplica(DeletedDiffReplicaArgs),
    /// Master, step 2 of 3: read deleted-diff-replica's output, write the primary keys the
    /// master no longer has.
    #[command(alias = "cqrs_deleted_diff_master")]
    DeletedDiffMaster(PipeArgs),
    /// Replica, step 3 of 3: read deleted-diff-master's output, delete those replica rows.
    #[command(alias = "cqrs_deleted_sync_replica")]
    DeletedSyncReplica(InputArgs),
    /// Inspect, retry or purge this service's dead-letter queue.
    #[command(subcommand, alias = "cqrs_dead_letters")]
    DeadLetters(DeadLetters),
    /// Run the replica consumer until SIGTERM or SIGINT.
    #[command(alias = "cqrs_consume", args = django_consume_args())]
    Consume,
    /// Run the outbox relay until SIGTERM or SIGINT (or, with --drain, until the outbox is
    /// empty).
    Relay(RelayArgs),
}

/// The rows a master command selects. Every condition given must hold.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct FilterArgs {
    /// Only these primary keys, comma-separated or repeated; integers are numeric keys,
    /// anything else a text key (quote it as JSON, '"007"', to force text)
    #[arg(long, value_name = "PK,...", value_delimiter = ',', value_parser = parse_pk)]
    pub(crate) pk: Vec<Value>,
    /// Primary key at least this
    #[arg(long, value_name = "PK", value_parser = parse_pk)]
    pub(crate) pk_from: Option<Value>,
    /// Primary key at most this
    #[arg(long, value_name = "PK", value_parser = parse_pk)]
    pub(crate) pk_to: Option<Value>,
    /// cqrs_updated at or after this time: RFC 3339 (2024-01-02T03:04:05Z), or
    /// "YYYY-MM-DD HH:MM:SS[.ffffff][+00:00]" (UTC when without offset), or YYYY-MM-DD
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub(crate) since: Option<DateTime<Utc>>,
    /// A raw SQL condition on the model's table, pasted into the query as it is (operators
    /// only: never from untrusted input)
    #[arg(long = "where", value_name = "SQL")]
    pub(crate) sql: Option<String>,
    /// django-cqrs style filter kwargs (JSON object), for the keys pk/id, pk__in/id__in,
    /// pk__gte/id__gte, pk__lte/id__lte and cqrs_updated__gte
    #[arg(long, short = 'f', value_name = "JSON")]
    pub(crate) filter: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// The cqrs_id of the master model
    #[arg(long, short = 'c', value_name = "CQRS_ID")]
    pub(crate) cqrs_id: String,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Select every row (required when no filter is given)
    #[arg(long)]
    pub(crate) all: bool,
    /// Send to this replica queue only (routing key cqrs.<queue>.<cqrs_id>) instead of every
    /// replica
    #[arg(long, short = 'q', value_name = "QUEUE")]
    pub(crate) queue: Option<String>,
    /// Rows read and published per batch
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// django-cqrs's `--progress`, accepted and a no-op: the progress bar already shows by
    /// itself whenever standard error is a terminal (and is never drawn into a file or pipe)
    #[arg(long, short = 'p')]
    #[allow(
        dead_code,
        reason = "accepted for django-cqrs's scripts; nothing to do"
    )]
    pub(crate) progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BulkDumpArgs {
    /// The cqrs_id of the master model
    #[arg(long, short = 'c', value_name = "CQRS_ID")]
    pub(crate) cqrs_id: String,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Output file, `-` for standard output [default: <cqrs_id>.dump]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Replace the output file if it exists; also django-cqrs's `-f` when no value follows it
    /// (`-f JSON` is --filter)
    #[arg(long)]
    pub(crate) force: bool,
    /// Rows read per batch
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// django-cqrs's `--progress`, accepted and a no-op: the progress bar already shows by
    /// itself whenever standard error is a terminal (and is never drawn into a file or pipe)
    #[arg(long, short = 'p')]
    #[allow(
        dead_code,
        reason = "accepted for django-cqrs's scripts; nothing to do"
    )]
    pub(crate) progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BulkLoadArgs {
    /// Input file written by bulk-dump, `-` for standard input
    #[arg(long, short = 'i', value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Delete every row of the replica table first. django-cqrs's `--clear VALUE` / `-c VALUE`
    /// (argparse `type=bool`) is accepted: true, 1, yes or on clear, an empty value does not;
    /// false, 0, no and off are refused, since django-cqrs would clear for them
    #[arg(
        long,
        short = 'c',
        value_name = "BOOL",
        num_args = 0..=1,
        default_value = "",
        default_missing_value = "true",
        hide_default_value = true,
        action = ArgAction::Set,
        value_parser = parse_clear
    )]
    pub(crate) clear: bool,
    /// Records per transaction
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
}

#[derive(Debug, Args)]
pub(crate) struct DiffMasterArgs {
    /// The cqrs_id of the master model
    #[arg(long, short = 'c', value_name = "CQRS_ID")]
    pub(crate) cqrs_id: String,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Output file, `-` for standard output
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub(crate) output: PathBuf,
    /// Rows per output line
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
}

#[derive(Debug, Args)]
pub(crate) struct PipeArgs {
    /// Input file, `-` for standard input
    #[arg(long, short = 'i', value_name = "FILE", default_value = "-")]
    pub(crate) input: PathBuf,
    /// Output file, `-` for standard output
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub(crate) output: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// Input file, `-` for standard input
    #[arg(long, short = 'i', value_name = "FILE", default_value = "-")]
    pub(crate) input: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DiffSyncArgs {
    /// Input file written by diff-replica, `-` for standard input
    #[arg(long, short = 'i', value_name = "FILE", default_value = "-")]
    pub(crate) input: PathBuf,
    /// Rows read and published per batch
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// django-cqrs's `--progress`, accepted and a no-op: the progress bar already shows by
    /// itself whenever standard error is a terminal (and is never drawn into a file or pipe)
    #[arg(long, short = 'p')]
    #[allow(
        dead_code,
        reason = "accepted for django-cqrs's scripts; nothing to do"
    )]
    pub(crate) progress: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DeletedDiffReplicaArgs {
    /// The cqrs_id of the replica model
    #[arg(long, short = 'c', value_name = "CQRS_ID")]
    pub(crate) cqrs_id: String,
    /// Output file, `-` for standard output
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub(crate) output: PathBuf,
    /// Primary keys per output line
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
    /// django-cqrs's filter kwargs: only `{}` (every row) is accepted, as the replica's keys
    /// cannot be filtered here; a narrower filter is refused rather than ignored, since
    /// deleted-sync-replica would then delete beyond it
    #[arg(long, short = 'f', value_name = "JSON", value_parser = parse_everything_filter)]
    #[allow(
        dead_code,
        reason = "only `{}` passes the parser, which selects every row"
    )]
    pub(crate) filter: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetters {
    /// Republish every dead letter to this service's queue with retries reset to 0, then
    /// remove it from the dead-letter queue
    Retry,
    /// Print every dead letter, one JSON object per line, and leave them in the queue
    Dump(DumpArgs),
    /// Remove every dead letter and print how many there were
    Purge,
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// Output file, `-` for standard output
    #[arg(long, short = 'o', value_name = "FILE", default_value = "-")]
    pub(crate) output: PathBuf,
    /// Print only the message bodies, one per line, as django-cqrs does
    #[arg(long)]
    pub(crate) bodies: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// Publish what waits in the outbox, then exit
    #[arg(long)]
    pub(crate) drain: bool,
}

/// Rewrites the django-cqrs spellings clap cannot declare into ours, before clap parses
/// `args` (`argv[0]` first):
///
/// - `-cid` (a single-dash option of several letters: django-cqrs's `--cqrs-id` in
///   `cqrs_sync`, `cqrs_diff_master`, `cqrs_deleted_diff_replica` and `cqrs_consume`) becomes
///   `--cqrs-id`, and `-cid=X` becomes `--cqrs-id=X`;
/// - in bulk-dump (`cqrs_bulk_dump`), a `-f` with no value after it (the end, or an option
///   next) becomes `--force`, as django-cqrs's `cqrs_bulk_dump -f` means; `-f JSON` stays
///   `--filter JSON`.
///
/// Nothing after a `--` is rewritten, nor `argv[0]`. Only [`Cli::run_from`](super::Cli::run_from)
/// and [`Cli::try_run_from`](super::Cli::try_run_from) call this: a service that parses
/// [`command`](super::command) itself and calls `run_matches` gets every other django-cqrs
/// spelling (clap names and shorts) but not these two.
pub(crate) fn django_spellings<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The subcommand: the first argument after argv[0] that is not an option (the root
    // command has no option that takes a value).
    let subcommand = args
        .iter()
        .enumerate()
        .skip(1)
        .take_while(|(_, arg)| *arg != "--")
        .find(|(_, arg)| !arg.to_string_lossy().starts_with('-'));
    let bulk_dump_from = match subcommand {
        Some((at, name)) if name == "bulk-dump" || name == "cqrs_bulk_dump" => Some(at),
        _ => None,
    };
    let mut out = Vec::with_capacity(args.len());
    let mut terminated = false;
    for (at, arg) in args.iter().enumerate() {
        let text = if at == 0 || terminated {
            None
        } else {
            arg.to_str()
        };
        let rewritten = match text {
            Some("--") => {
                terminated = true;
                None
            }
            Some("-cid") => Some("--cqrs-id".to_owned()),
            Some(text) if text.starts_with("-cid=") => {
                Some(format!("--cqrs-id={}", &text["-cid=".len()..]))
            }
            Some("-f") if bulk_dump_from.is_some_and(|from| at > from) => {
                let value_follows = args
                    .get(at + 1)
                    .is_some_and(|next| !next.to_string_lossy().starts_with('-'));
                (!value_follows).then(|| "--force".to_owned())
            }
            _ => None,
        };
        out.push(rewritten.map_or_else(|| arg.clone(), OsString::from));
    }
    out
}

/// `--clear` of bulk-load, with or without django-cqrs's value (`type=bool` there, so any
/// non-empty text clears): the true spellings clear, an empty value does not, and the false
/// ones are refused instead of clearing as django-cqrs would.
fn parse_clear(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
        "" => Ok(false),
        _ => Err(format!(
            "give --clear alone (or --clear=true) to delete the replica rows first, or leave it \
             out to keep them; {text:?} is refused because django-cqrs's --clear (type=bool) \
             clears for any non-empty value, even False"
        )),
    }
}

/// `--filter` of deleted-diff-replica: django-cqrs's kwargs, of which only `{}` (every row)
/// can be honoured.
fn parse_everything_filter(text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(kwargs)) if kwargs.is_empty() => Ok(text.to_owned()),
        Ok(Value::Object(_)) => Err(
            "deleted-diff-replica lists every replica key: it cannot filter them, so only {} is \
             accepted (ignoring a narrower filter would let deleted-sync-replica delete beyond \
             it)"
            .to_owned(),
        ),
        Ok(_) => Err("expected a JSON object of filter kwargs".to_owned()),
        Err(error) => Err(format!("not JSON: {error}")),
    }
}

/// The warning for a django-cqrs flag accepted and ignored.
fn ignored(flag: &str, value: &str, why: &str) -> String {
    let flag = if value.is_empty() {
        flag.to_owned()
    } else {
        format!("{flag} {value}")
    };
    format!("warning: consume: {flag} is ignored: {why}")
}

/// Prints [`ignored`] on standard error (a closed standard error is not a failure).
fn warn_ignored(flag: &str, value: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{}", ignored(flag, value, why));
}

/// The id of consume's `--workers` argument (read by the consume command).
pub(crate) const CONSUME_WORKERS: &str = "workers";

/// The worker count consume's `--workers` asks for, if given.
pub(crate) fn consume_workers(matches: &clap::ArgMatches) -> Option<usize> {
    let (_, consume) = matches.subcommand()?;
    consume
        .try_get_one::<u16>(CONSUME_WORKERS)
        .ok()
        .flatten()
        .map(|&workers| usize::from(workers))
}
/// The id of consume's `--cqrs-id` argument.
pub(crate) const CONSUME_CQRS_IDS: &str = "cqrs_id";

/// The models consume's `--cqrs-id` (`-cid`) names; empty when not given (or given bare, as
/// django-cqrs's `nargs='*'` allows): every registered model. Commas also separate ids.
pub(crate) fn consume_cqrs_ids(matches: &clap::ArgMatches) -> Vec<String> {
    let Some((_, consume)) = matches.subcommand() else {
        return Vec::new();
    };
    consume
        .try_get_many::<String>(CONSUME_CQRS_IDS)
        .ok()
        .flatten()
        .into_iter()
        .flatten()
        .flat_map(|ids| ids.split(','))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}
const RELOAD_WHY: &str = "a compiled service has no source files to reload; restart it instead";
const TIMEOUT_WHY: &str = "there are no worker processes to kill: the consumer stops by itself \
     on SIGTERM or SIGINT";

/// A value parser that checks a whole number, then warns that `flag` is ignored.
fn ignored_number(
    flag: &'static str,
    why: &'static str,
    empty_ok: bool,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        if !(empty_ok && text.is_empty()) && text.trim().parse::<u32>().is_err() {
            return Err(format!("{text:?} is not a whole number"));
        }
        warn_ignored(flag, text, why);
        Ok(text.to_owned())
    }
}

/// A value parser that warns that `flag` is ignored.
fn ignored_text(
    flag: &'static str,
    why: &'static str,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        warn_ignored(flag, text, why);
        Ok(text.to_owned())
    }
}

/// django-cqrs's `cqrs_consume` flags. `--workers` sets the number of replica workers (as
/// `CQRS_WORKERS` does) and `--cqrs-id` the models consumed; the others do not map onto this
/// consumer's run: each is accepted,
/// checked as django-cqrs would, and ignored with a one-line warning on standard error
/// (printed while the arguments are parsed).
fn django_consume_args() -> [Arg; 6] {
    let django = "django-cqrs's";
    [
        Arg::new(CONSUME_WORKERS)
            .long("workers")
            .short('w')
            .value_name("N")
            .action(ArgAction::Set)
            .value_parser(clap::value_parser!(u16).range(1..))
            .help(
                "Replica workers applying batches concurrently (instead of CQRS_WORKERS; one \
                 row always goes to the same worker)",
            ),
        Arg::new(CONSUME_CQRS_IDS)
            .long("cqrs-id")
            .value_name("CQRS_ID")
            .num_args(0..)
            .action(ArgAction::Append)
            .help(
                "Consume only these models (also -cid, repeatable): the queue is bound for them \
                 only; messages of the other registered models still in the queue are \
                 dead-lettered for `dead-letters retry`. None given: every registered model",
            ),
        Arg::new("reload")
            .long("reload")
            .short('r')
            .num_args(0)
            .default_missing_value("")
            .action(ArgAction::Set)
            .value_parser(ignored_text("--reload", RELOAD_WHY))
            .help(format!(
                "{django} autoreload: ignored (with a warning); {RELOAD_WHY}"
            )),
        Arg::new("ignore_paths")
            .long("ignore-paths")
            .value_name("PATHS")
            .num_args(0..=1)
            .default_missing_value("")
            .action(ArgAction::Set)
            .value_parser(ignored_text("--ignore-paths", RELOAD_WHY))
            .help(format!(
                "{django} paths --reload does not watch: ignored (with a warning)"
            )),
        Arg::new("sigint_timeout")
            .long("sigint-timeout")
            .value_name("SECONDS")
            .num_args(0..=1)
            .default_missing_value("")
            .action(ArgAction::Set)
            .value_parser(ignored_number("--sigint-timeout", TIMEOUT_WHY, true))
            .help(format!(
                "{django} worker stop timeout: ignored (with a warning); {TIMEOUT_WHY}"
            )),
        Arg::new("sigkill_timeout")
            .long("sigkill-timeout")
            .value_name("SECONDS")
            .num_args(0..=1)
            .default_missing_value("")
            .action(ArgAction::Set)
            .value_parser(ignored_number("--sigkill-timeout", TIMEOUT_WHY, true))
            .help(format!(
                "{django} worker kill timeout: ignored (with a warning); {TIMEOUT_WHY}"
            )),
    ]
}

/// A primary key given on the command line: an integer, a JSON string, or else text.
pub(crate) fn parse_pk(text: &str) -> Result<Value, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty primary key".to_owned());
    }
    if text.starts_with('"') {
        return match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::String(_)) => Ok(value),
            _ => Err(format!("{text} is not a JSON string")),
        };
    }
    if let Ok(n) = text.parse::<i64>() {
        return Ok(Value::from(n));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Value::from(n));
    }
    Ok(Value::String(text.to_owned()))
}

const SINCE_FORMATS: &str = "expected RFC 3339 (2024-01-02T03:04:05Z), \"YYYY-MM-DD HH:MM:SS[.ffffff][+00:00]\" or YYYY-MM-DD";

/// A time for `--since`: with an offset, or UTC without one, or a date (its midnight, UTC).
pub(crate) fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = cqrs_core::parse_timestamp(text) {
        return Ok(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err(format!("{text:?} is not a time: {SINCE_FORMATS}"))
}

impl FilterArgs {
    /// The [`RowFilter`] these arguments describe.
    pub(crate) fn to_filter(&self) -> Result<RowFilter, CliError> {
        let mut filter = RowFilter {
            pks: (!self.pk.is_empty()).then(|| self.pk.clone()),
            pk_from: self.pk_from.clone(),
            pk_to: self.pk_to.clone(),
            updated_since: self.since,
            sql: self.sql.clone(),
        };
        if let Some(sql) = &filter.sql
            && sql.trim().is_empty()
        {
            return Err(CliError::Filter("--where is empty".to_owned()));
        }
        if let Some(json) = &self.filter {
            merge_kwargs(&mut filter, json)?;
        }
        Ok(filter)
    }

    /// Whether no condition was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.pk.is_empty()
            && self.pk_from.is_none()
            && self.pk_to.is_none()
            && self.since.is_none()
            && self.sql.is_none()
            && self.filter.is_none()
    }
}

const KWARGS: &str = "pk/id, pk__in/id__in, pk__gte/id__gte, pk__lte/id__lte, cqrs_updated__gte";

/// Adds django-cqrs style kwargs (`{"id__in": [1, 2]}`) to `filter`.
fn merge_kwargs(filter: &mut RowFilter, json: &str) -> Result<(), CliError> {
    let bad = |reason: String| CliError::Filter(format!("--filter {json}: {reason}"));
    let kwargs = match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(bad("expected a JSON object of filter kwargs".to_owned())),
        Err(error) => return Err(bad(format!("not JSON: {error}"))),
    };
    let scalar = |key: &str, value: &Value| -> Result<Value, CliError> {
        match value {
            Value::String(_) | Value::Number(_) => Ok(value.clone()),
            other => Err(bad(format!(
                "`{key}` must be a number or a string, found {other}"
            ))),
        }
    };
    for (key, value) in &kwargs {
        let twice = || {
            bad(format!(
                "`{key}` repeats a condition given by another option"
            ))
        };
        match key.as_str() {
            "pk" | "id" => {
                if filter.pks.is_some() {
                    return Err(twice());
                }
                filter.pks = Some(vec![scalar(key, value)?]);
            }
            "pk__in" | "id__in" => {
                if filter.pks.is_some() {
                    return Err(twice());
                }
                let Value::Array(values) = value else {
                    return Err(bad(format!("`{key}` must be a JSON array")));
                };
                filter.pks = Some(
                    values
                        .iter()
                        .map(|v| scalar(key, v))
                        .collect::<Result<_, _>>()?,
                );
            }
            "pk__gte" | "id__gte" => {
                if filter.pk_from.is_some() {
                    return Err(twice());
                }
                filter.pk_from = Some(scalar(key, value)?);
            }
            "pk__lte" | "id__lte" => {
                if filter.pk_to.is_some() {
                    return Err(twice());
                }
                filter.pk_to = Some(scalar(key, value)?);
            }
            "cqrs_updated__gte" => {
                if filter.updated_since.is_some() {
                    return Err(twice());
                }
                let Value::String(text) = value else {
                    return Err(bad(format!("`{key}` must be a time string")));
                };
                filter.updated_since = Some(parse_since(text).map_err(bad)?);
            }
            other => {
                return Err(bad(format!(
                    "unsupported key `{other}` (supported: {KWARGS}); use --where for other conditions"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        CliArgs::command().debug_assert();
    }

    #[test]
    fn primary_keys_are_numbers_or_text() {
        assert_eq!(parse_pk("12"), Ok(Value::from(12)));
        assert_eq!(parse_pk(" -3 "), Ok(Value::from(-3)));
        assert_eq!(parse_pk("18446744073709551615"), Ok(Value::from(u64::MAX)));
        assert_eq!(parse_pk("abc"), Ok(Value::from("abc")));
        assert_eq!(parse_pk("\"007\""), Ok(Value::from("007")));
        assert_eq!(
            parse_pk("6cf873fd-0349-4f7d-b40d-4b093cfc3cec"),
            Ok(Value::from("6cf873fd-0349-4f7d-b40d-4b093cfc3cec"))
        );
        assert!(parse_pk("").is_err());
        assert!(parse_pk("\"unterminated").is_err());
    }

    #[test]
    fn since_accepts_the_usual_spellings() {
        let at = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        for text in [
            "2024-01-02T03:04:05Z",
            "2024-01-02 03:04:05+00:00",
            "2024-01-02 04:04:05+01:00",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05.000",
        ] {
            assert_eq!(parse_since(text), Ok(at), "{text}");
        }
        assert_eq!(
            parse_since("2024-01-02"),
            Ok(Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap())
        );
        let error = parse_since("yesterday").unwrap_err();
        assert!(error.contains("RFC 3339"), "{error}");
        assert!(parse_since("2024-13-02").is_err());
    }

    #[test]
    fn filters_combine_options_and_kwargs() {
        let args = CliArgs::try_parse_from([
            "cqrs",
            "sync",
            "-c",
            "author",
            "--pk",
            "1,2",
            "--pk",
            "x",
            "--since",
            "2024-01-02",
            "--where",
            "name LIKE 'A%'",
        ])
        .unwrap();
        let Command::Sync(sync) = args.command else {
            panic!("sync")
        };
        let filter = sync.filter.to_filter().unwrap();
        assert_eq!(
            filter.pks,
            Some(vec![Value::from(1), Value::from(2), Value::from("x")])
        );
        assert_eq!(filter.sql.as_deref(), Some("name LIKE 'A%'"));
        assert!(filter.updated_since.is_some());

        let kwargs = FilterArgs {
            filter: Some(r#"{"id__in": [1, "2"], "id__gte": 1, "pk__lte": 9, "cqrs_updated__gte": "2024-01-02 00:00:00+00:00"}"#.into()),
            ..FilterArgs::default()
        };
        let filter = kwargs.to_filter().unwrap();
        assert_eq!(filter.pks, Some(vec![Value::from(1), Value::from("2")]));
        assert_eq!(filter.pk_from, Some(Value::from(1)));
        assert_eq!(filter.pk_to, Some(Value::from(9)));
        assert!(filter.updated_since.is_some());
    }

    #[test]
    fn malformed_filters_say_why() {
        for (json, expected) in [
            ("[1]", "expected a JSON object"),
            ("{", "not JSON"),
            (
                r#"{"name__startswith": "A"}"#,
                "unsupported key `name__startswith`",
            ),
            (r#"{"id__in": 3}"#, "must be a JSON array"),
            (r#"{"cqrs_updated__gte": "soon"}"#, "is not a time"),
        ] {
            let args = FilterArgs {
                filter: Some(json.into()),
                ..FilterArgs::default()
            };
            let error = args.to_filter().unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
        let twice = FilterArgs {
            pk: vec![Value::from(1)],
            filter: Some(r#"{"id": 2}"#.into()),
            ..FilterArgs::default()
        };
        assert!(twice.to_filter().is_err());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for args in [
            vec!["cqrs", "sync", "-c", "author", "--pk-from"],
            vec!["cqrs", "sync", "-c", "author", "--since", "tomorrow"],
            vec!["cqrs", "sync", "--all"],
            vec!["cqrs", "bulk-load"],
            vec!["cqrs", "sync", "-c", "author", "--batch", "0"],
            vec!["cqrs", "frobnicate"],
        ] {
            let error = CliArgs::try_parse_from(&args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    fn rewritten(args: &[&str]) -> Vec<String> {
        django_spellings(args.iter().copied())
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    /// Parses as `Cli::try_run_from` does: the django-cqrs spellings rewritten first.
    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        CliArgs::try_parse_from(django_spellings(args.iter().copied())).map(|args| args.command)
    }

    #[test]
    fn dash_cid_becomes_cqrs_id_before_a_terminator_only() {
        assert_eq!(
            rewritten(&["cqrs", "cqrs_sync", "-cid", "author", "-f", "{}"]),
            ["cqrs", "cqrs_sync", "--cqrs-id", "author", "-f", "{}"]
        );
        assert_eq!(
            rewritten(&["cqrs", "cqrs_diff_master", "-cid=author"]),
            ["cqrs", "cqrs_diff_master", "--cqrs-id=author"]
        );
        assert_eq!(
            rewritten(&["cqrs", "sync", "-c", "author", "--", "-cid", "-cid=x"]),
            ["cqrs", "sync", "-c", "author", "--", "-cid", "-cid=x"],
            "-c is left alone, and nothing after --"
        );
        assert_eq!(
            rewritten(&["-cid", "consume", "-cidx", "--cid", "cid"]),
            ["-cid", "consume", "-cidx", "--cid", "cid"],
            "argv[0] and other spellings are left alone"
        );
        // -cid parses as --cqrs-id, and -c still works.
        for args in [
            &["cqrs", "cqrs_sync", "-cid", "author", "--all"][..],
            &["cqrs", "cqrs_sync", "-cid=author", "--all"],
            &["cqrs", "sync", "-c", "author", "--all"],
            &["cqrs", "sync", "-cauthor", "--all"],
            &["cqrs", "sync", "--cqrs-id=author", "--all"],
        ] {
            let Ok(Command::Sync(sync)) = parse(args) else {
                panic!("{args:?}")
            };
            assert_eq!(sync.cqrs_id, "author", "{args:?}");
        }
        // Without the rewriting (a service parsing `command()` itself), clap reads `-cid` as
        // `-c id`: an error, never another model silently.
        assert!(CliArgs::try_parse_from(["cqrs", "cqrs_sync", "-cid", "author"]).is_err());
    }

    #[test]
    fn bulk_dump_dash_f_without_a_value_is_force() {
        assert_eq!(
            rewritten(&["cqrs", "cqrs_bulk_dump", "-c", "author", "-f"]),
            ["cqrs", "cqrs_bulk_dump", "-c", "author", "--force"]
        );
        assert_eq!(
            rewritten(&["cqrs", "bulk-dump", "-f", "-o", "x", "-f", "{}"]),
            ["cqrs", "bulk-dump", "--force", "-o", "x", "-f", "{}"]
        );
        assert_eq!(
            rewritten(&["cqrs", "sync", "-c", "author", "-f"]),
            ["cqrs", "sync", "-c", "author", "-f"],
            "only in bulk-dump"
        );
        assert_eq!(
            rewritten(&["cqrs", "cqrs_bulk_dump", "--", "-f"]),
            ["cqrs", "cqrs_bulk_dump", "--", "-f"]
        );
        let Ok(Command::BulkDump(dump)) = parse(&[
            "cqrs",
            "cqrs_bulk_dump",
            "-c",
            "author",
            "-o",
            "author.dump",
            "-b",
            "5",
            "-p",
            "-f",
        ]) else {
            panic!("cqrs_bulk_dump")
        };
        assert!(dump.force && dump.progress);
        assert_eq!((dump.cqrs_id.as_str(), dump.batch), ("author", 5));
        assert_eq!(dump.output, Some(PathBuf::from("author.dump")));
        assert!(dump.filter.is_empty());
        let Ok(Command::BulkDump(dump)) = parse(&[
            "cqrs",
            "cqrs_bulk_dump",
            "--cqrs-id=author",
            "--output=-",
            "--batch=2",
            "--progress",
            "--force",
            "-f",
            r#"{"id": 1}"#,
        ]) else {
            panic!("cqrs_bulk_dump")
        };
        assert!(dump.force && dump.progress);
        assert_eq!(dump.filter.filter.as_deref(), Some(r#"{"id": 1}"#));
    }

    #[test]
    fn sync_takes_django_cqrs_flags() {
        let Ok(Command::Sync(sync)) = parse(&[
            "cqrs",
            "cqrs_sync",
            "-cid",
            "author",
            "-f",
            r#"{"id__in": [1]}"#,
            "-q",
            "payments",
            "-b",
            "5",
            "-p",
        ]) else {
            panic!("cqrs_sync")
        };
        assert_eq!(sync.cqrs_id, "author");
        assert_eq!(sync.filter.filter.as_deref(), Some(r#"{"id__in": [1]}"#));
        assert_eq!((sync.queue.as_deref(), sync.batch), (Some("payments"), 5));
        assert!(sync.progress);
        // django-cqrs's README spelling: `-f={}` `-q=replica`.
        let Ok(Command::Sync(sync)) = parse(&[
            "cqrs",
            "cqrs_sync",
            "--cqrs-id=author",
            "-f={}",
            "-q=replica",
            "--batch=3",
            "--progress",
        ]) else {
            panic!("cqrs_sync")
        };
        assert_eq!(sync.filter.filter.as_deref(), Some("{}"));
        assert_eq!(sync.queue.as_deref(), Some("replica"));
        let Ok(Command::Sync(sync)) = parse(&["cqrs", "sync", "-c", "author", "--all"]) else {
            panic!("sync")
        };
        assert!(!sync.progress && sync.batch == 1000, "defaults unchanged");
    }

    #[test]
    fn bulk_load_clear_takes_django_cqrs_values() {
        let clear = |args: &[&str]| {
            let mut argv = vec!["cqrs", "cqrs_bulk_load", "-i", "author.dump"];
            argv.extend_from_slice(args);
            match parse(&argv) {
                Ok(Command::BulkLoad(load)) => Ok(load.clear),
                Ok(other) => panic!("{other:?}"),
                Err(error) => Err(error),
            }
        };
        assert!(!clear(&[]).unwrap(), "the default");
        for args in [
            &["--clear"][..],
            &["-c"],
            &["--clear=true"],
            &["--clear", "True"],
            &["-c", "1"],
            &["-c=yes"],
            &["-c", "-b", "3"],
        ] {
            assert!(clear(args).unwrap(), "{args:?}");
        }
        assert!(!clear(&["--clear="]).unwrap(), "bool('') is False");
        for args in [&["--clear", "False"][..], &["-c", "0"], &["--clear=no"]] {
            let error = clear(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
            assert!(error.to_string().contains("even False"), "{error}");
        }
        let Ok(Command::BulkLoad(load)) = parse(&[
            "cqrs",
            "cqrs_bulk_load",
            "--input=-",
            "--batch=7",
            "-c",
            "true",
        ]) else {
            panic!("cqrs_bulk_load")
        };
        assert_eq!((load.input, load.batch), (PathBuf::from("-"), 7));
    }

    #[test]
    fn diff_commands_take_django_cqrs_flags() {
        let Ok(Command::DiffMaster(diff)) = parse(&[
            "cqrs",
            "cqrs_diff_master",
            "-cid",
            "author",
            "-f",
            r#"{"id__gte": 2}"#,
            "-b",
            "9",
        ]) else {
            panic!("cqrs_diff_master")
        };
        assert_eq!((diff.cqrs_id.as_str(), diff.batch), ("author", 9));
        assert_eq!(diff.filter.filter.as_deref(), Some(r#"{"id__gte": 2}"#));
        assert_eq!(diff.output, PathBuf::from("-"));

        let Ok(Command::DiffSync(diff)) = parse(&["cqrs", "cqrs_diff_sync", "-b", "4", "-p"])
        else {
            panic!("cqrs_diff_sync")
        };
        assert_eq!((diff.batch, diff.progress), (4, true));
        assert_eq!(diff.input, PathBuf::from("-"));

        let Ok(Command::DeletedDiffReplica(diff)) = parse(&[
            "cqrs",
            "cqrs_deleted_diff_replica",
            "-cid=author",
            "--filter={}",
            "--batch=2",
        ]) else {
            panic!("cqrs_deleted_diff_replica")
        };
        assert_eq!((diff.cqrs_id.as_str(), diff.batch), ("author", 2));
        let error = parse(&[
            "cqrs",
            "cqrs_deleted_diff_replica",
            "-cid",
            "author",
            "-f",
            r#"{"id__in": [1]}"#,
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("only {} is"), "{error}");

        // The commands that take no flag in django-cqrs: standard input and output.
        for name in [
            "cqrs_diff_replica",
            "cqrs_deleted_diff_master",
            "cqrs_deleted_sync_replica",
        ] {
            assert!(parse(&["cqrs", name]).is_ok(), "{name}");
        }
    }

    #[test]
    fn consume_and_dead_letters_take_django_cqrs_arguments() {
        for args in [
            &["cqrs", "cqrs_consume"][..],
            &["cqrs", "cqrs_consume", "-w", "2", "-cid", "author", "book"],
            &[
                "cqrs",
                "cqrs_consume",
                "--workers=3",
                "--cqrs-id",
                "--reload",
                "--ignore-paths",
                "env,node_modules",
                "--sigint-timeout",
                "5",
                "--sigkill-timeout",
            ],
            &[
                "cqrs",
                "consume",
                "-r",
                "--sigint-timeout",
                "--cqrs-id=author",
            ],
        ] {
            assert!(matches!(parse(args), Ok(Command::Consume)), "{args:?}");
        }
        for args in [
            &["cqrs", "cqrs_consume", "-w", "many"][..],
            &["cqrs", "cqrs_consume", "--sigkill-timeout", "soon"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        let matches = CliArgs::command()
            .try_get_matches_from(["cqrs", "cqrs_consume", "-w", "3"])
            .unwrap();
        assert_eq!(super::consume_workers(&matches), Some(3));
        let matches = CliArgs::command()
            .try_get_matches_from(["cqrs", "consume"])
            .unwrap();
        assert_eq!(super::consume_workers(&matches), None);
        assert!(super::consume_cqrs_ids(&matches).is_empty());
        assert!(parse(&["cqrs", "consume", "-w", "0"]).is_err());
        let consume = CliArgs::command();
        let cqrs_id_help = consume
            .find_subcommand("consume")
            .and_then(|consume| {
                consume
                    .get_arguments()
                    .find(|arg| arg.get_id() == "cqrs_id")
            })
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .unwrap();
        assert!(
            !cqrs_id_help.contains("ignored") && cqrs_id_help.contains("dead-lettered"),
            "--cqrs-id is served now: {cqrs_id_help}"
        );
        for (args, expected) in [
            (
                &["cqrs", "cqrs_consume", "-cid", "author", "book"][..],
                &["author", "book"][..],
            ),
            (
                &["cqrs", "consume", "--cqrs-id=author", "--cqrs-id", "book"],
                &["author", "book"],
            ),
            (
                &["cqrs", "consume", "--cqrs-id", "author,book"],
                &["author", "book"],
            ),
            (&["cqrs", "consume", "--cqrs-id", "-r"], &[]),
        ] {
            let matches = CliArgs::command()
                .try_get_matches_from(django_spellings(args.iter().copied()))
                .unwrap();
            assert_eq!(super::consume_cqrs_ids(&matches), expected, "{args:?}");
        }
        assert_eq!(
            ignored("--reload", "", RELOAD_WHY),
            format!("warning: consume: --reload is ignored: {RELOAD_WHY}")
        );
        let help = CliArgs::command()
            .find_subcommand_mut("consume")
            .unwrap()
            .render_help()
            .to_string();
        for flag in [
            "-w, --workers <N>",
            "--cqrs-id",
            "-r, --reload",
            "--sigkill-timeout",
        ] {
            assert!(help.contains(flag), "{flag}: {help}");
        }
        for (name, expected) in [("retry", "Retry"), ("dump", "Dump"), ("purge", "Purge")] {
            let Ok(Command::DeadLetters(command)) = parse(&["cqrs", "cqrs_dead_letters", name])
            else {
                panic!("cqrs_dead_letters {name}")
            };
            assert!(format!("{command:?}").starts_with(expected), "{command:?}");
        }
    }
}
