//! The command line: clap definitions and the parsing of filters.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, Parser, Subcommand};
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
    #[command(alias = "cqrs_consume")]
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
    /// Replace the output file if it exists
    #[arg(long)]
    pub(crate) force: bool,
    /// Rows read per batch
    #[arg(long, short = 'b', value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) batch: u32,
}

#[derive(Debug, Args)]
pub(crate) struct BulkLoadArgs {
    /// Input file written by bulk-dump, `-` for standard input
    #[arg(long, short = 'i', value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Delete every row of the replica table first
    #[arg(long)]
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
}
