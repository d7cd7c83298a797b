//! The commands that read and write rows only, without the broker: bulk dump and load, and
//! the file-producing steps of the diffs.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::args::{
    BulkDumpArgs, BulkLoadArgs, DeletedDiffReplicaArgs, DiffMasterArgs, InputArgs, PipeArgs,
};
use super::io::{Input, Output, Progress, Unit, progress_total};
use super::{Cli, CliError, Report, blocking, master_of, replica_of};
use crate::connection::CqrsConnection;
use crate::master::RowFilter;
use crate::ops::{Rejected, ReplicaOps};
use crate::replica::key_text;

/// Sorts an error of a filtered query: a primary key that does not decode, or (on the first
/// page) a `--where` the database refuses, is the operator's to fix.
pub(super) fn query_error(error: crate::Error, filter: &RowFilter, first_page: bool) -> CliError {
    use diesel::result::{DatabaseErrorKind as Kind, Error as Diesel};
    match error {
        crate::Error::Database(Diesel::QueryBuilderError(reason)) => {
            CliError::Filter(reason.to_string())
        }
        crate::Error::Database(Diesel::DatabaseError(kind, info))
            if first_page
                && filter.sql.is_some()
                && !matches!(kind, Kind::ClosedConnection | Kind::UnableToSendCommand) =>
        {
            CliError::Filter(format!(
                "the database refused the query with the --where condition: {}",
                info.message()
            ))
        }
        other => CliError::Runtime(other),
    }
}

/// Sorts an error of a statement on keys read from line `line` of `input`: keys that do not
/// decode for the model are a format error of the file.
fn key_error(error: crate::Error, input: &Input, line: usize) -> CliError {
    match error {
        crate::Error::Database(diesel::result::Error::QueryBuilderError(reason)) => {
            input.format_error(line, reason.to_string())
        }
        other => CliError::Runtime(other),
    }
}

/// The header line of the diffs: `<cqrs_id>,<time>` (the time as Python's `str()` of an aware
/// datetime, as django-cqrs writes it).
fn diff_header(cqrs_id: &str, clock: &cqrs_core::Clock) -> String {
    format!("{cqrs_id},{}", cqrs_core::format_timestamp(&clock.now()))
}

fn json_line(values: &[Value]) -> String {
    Value::Array(values.to_vec()).to_string()
}

/// Parses a line holding a JSON array of primary keys (JSON scalars).
fn parse_keys(
    input: &Input,
    line: usize,
    bytes: &[u8],
    what: &str,
) -> Result<Vec<Value>, CliError> {
    let bad = || {
        input.format_error(
            line,
            format!("expected a JSON array of primary keys ({what})"),
        )
    };
    let Ok(Value::Array(keys)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(bad());
    };
    if keys
        .iter()
        .any(|key| !matches!(key, Value::String(_) | Value::Number(_)))
    {
        return Err(bad());
    }
    Ok(keys)
}

/// Keyset paging: fetches pages of `batch` items, each after the key of the previous page's
/// last item, hands each page to `each`, and stops after a short page.
fn for_each_page<T>(
    batch: usize,
    mut fetch: impl FnMut(Option<&Value>) -> Result<Vec<T>, CliError>,
    key_of: impl Fn(&T) -> Value,
    mut each: impl FnMut(&[T]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut after: Option<Value> = None;
    loop {
        let page = fetch(after.as_ref())?;
        each(&page)?;
        match page.last() {
            Some(last) if page.len() == batch => after = Some(key_of(last)),
            _ => return Ok(()),
        }
    }
}

pub(super) async fn bulk_dump<C: CqrsConnection>(
    cli: &Cli<C>,
    args: BulkDumpArgs,
) -> Result<Report, CliError> {
    cli.check_master(&args.cqrs_id)?;
    let filter = args.filter.to_filter()?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.dump", args.cqrs_id)));
    let (ops, connect) = (cli.operations(), cli.connect());
    blocking(move || {
        let master = master_of(&ops, &args.cqrs_id)?;
        let mut out = Output::create(&output, args.force)?;
        let mut conn = connect().map_err(CliError::database)?;
        out.line(master.cqrs_id())?;
        let total = progress_total(|| master.count(&mut conn, &filter));
        let progress = Progress::start("bulk-dump", Unit::Items("rows"), total);
        let mut written = 0u64;
        for_each_page(
            args.batch as usize,
            |after| {
                master
                    .page(&mut conn, &filter, after, args.batch as usize)
                    .map_err(|e| query_error(e, &filter, after.is_none()))
            },
            |row| row.pk.clone(),
            |page| {
                for row in page {
                    out.line(&Value::Object(row.instance_data.clone()).to_string())?;
                }
                written += page.len() as u64;
                progress.inc(page.len() as u64);
                Ok(())
            },
        )?;
        progress.finish();
        let target = out.path().display().to_string();
        out.commit()?;
        Ok(Report {
            processed: written,
            written,
            skipped: 0,
            summary: format!(
                "bulk-dump: {written} `{}` record(s) written to {target}",
                args.cqrs_id
            ),
        })
    })
    .await
}

pub(super) async fn bulk_load<C: CqrsConnection>(
    cli: &Cli<C>,
    args: BulkLoadArgs,
) -> Result<Report, CliError> {
    let (ops, connect) = (cli.operations(), cli.connect());
    blocking(move || {
        let mut input = Input::open(&args.input)?;
        let (header, fields) = input.header("`<cqrs_id>` (a file written by bulk-dump)")?;
        if fields.len() != 1 {
            return Err(input.format_error(
                1,
                format!("`{header}` is not a bulk-dump header (the cqrs_id alone)"),
            ));
        }
        let replica = replica_of(&ops, &fields[0])?;
        let mut conn = connect().map_err(CliError::database)?;
        let progress = Progress::start("bulk-load", Unit::Bytes, input.len());
        if args.clear {
            let cleared = conn
                .write_transaction(|conn| replica.clear(conn))
                .map_err(CliError::Runtime)?;
            progress.println(&format!(
                "bulk-load: cleared {cleared} `{}` row(s)",
                replica.cqrs_id()
            ));
        }
        let batch = args.batch as usize;
        let mut rejected: Vec<Rejected> = Vec::new();
        let mut loaded = 0u64;
        let mut read = 0u64;
        let reject = |rejected: &mut Vec<Rejected>, r: Rejected| {
            progress.println(&format!("line {}: {}", r.line, r.reason));
            rejected.push(r);
        };
        loop {
            let mut records: Vec<(usize, Map<String, Value>)> = Vec::with_capacity(batch);
            let mut end = false;
            while records.len() < batch {
                let Some((line, bytes)) = input.next_content_line()? else {
                    end = true;
                    break;
                };
                read += 1;
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(Value::Object(data)) => records.push((line, data)),
                    Ok(other) => reject(
                        &mut rejected,
                        Rejected {
                            line,
                            reason: format!(
                                "expected an instance_data JSON object, found {}",
                                cqrs_core::JsonType::of(&other)
                            ),
                        },
                    ),
                    Err(error) => reject(
                        &mut rejected,
                        Rejected {
                            line,
                            reason: format!("not JSON: {error}"),
                        },
                    ),
                }
            }
            if !records.is_empty() {
                let refused = load_batch(replica, &mut conn, &records)?;
                loaded += (records.len() - refused.len()) as u64;
                for r in refused {
                    reject(&mut rejected, r);
                }
            }
            progress.set(input.consumed());
            progress.note(format!("{loaded} loaded, {} rejected", rejected.len()));
            if end {
                break;
            }
        }
        progress.finish();
        let cqrs_id = replica.cqrs_id();
        if !rejected.is_empty() {
            return Err(CliError::Rejected { loaded, rejected });
        }
        Ok(Report {
            processed: read,
            written: loaded,
            skipped: 0,
            summary: format!(
                "bulk-load: {loaded} `{cqrs_id}` record(s) loaded from {}",
                input.path().display()
            ),
        })
    })
    .await
}

/// Loads one batch in a transaction. When the database refuses the batch's statement, each
/// record is tried alone (in its own transaction) to find the ones it refuses.
fn load_batch<C: CqrsConnection>(
    replica: &dyn ReplicaOps<C>,
    conn: &mut C,
    records: &[(usize, Map<String, Value>)],
) -> Result<Vec<Rejected>, CliError> {
    let error = match conn.write_transaction(|conn| replica.load(conn, records)) {
        Ok(rejected) => return Ok(rejected),
        Err(error) => error,
    };
    if conn.batch_execute("SELECT 1").is_err() {
        return Err(CliError::Runtime(error));
    }
    if let [(line, _)] = records {
        return Ok(vec![Rejected {
            line: *line,
            reason: error.to_string(),
        }]);
    }
    tracing::debug!(%error, "a batch was refused; loading its records one by one");
    let mut rejected = Vec::new();
    for record in records {
        rejected.extend(load_batch(replica, conn, std::slice::from_ref(record))?);
    }
    Ok(rejected)
}

pub(super) async fn diff_master<C: CqrsConnection>(
    cli: &Cli<C>,
    args: DiffMasterArgs,
) -> Result<Report, CliError> {
    cli.check_master(&args.cqrs_id)?;
    let filter = args.filter.to_filter()?;
    let (ops, connect) = (cli.operations(), cli.connect());
    let clock = cli.config().clock().clone();
    blocking(move || {
        let master = master_of(&ops, &args.cqrs_id)?;
        let mut out = Output::create(&args.output, true)?;
        let mut conn = connect().map_err(CliError::database)?;
        out.line(&diff_header(master.cqrs_id(), &clock))?;
        let total = progress_total(|| master.count(&mut conn, &filter));
        let progress = Progress::start("diff-master", Unit::Items("rows"), total);
        let (mut processed, mut written) = (0u64, 0u64);
        for_each_page(
            args.batch as usize,
            |after| {
                master
                    .keys(&mut conn, &filter, after, args.batch as usize)
                    .map_err(|e| query_error(e, &filter, after.is_none()))
            },
            |key| key.pk.clone(),
            |keys| {
                let pairs: Vec<Value> = keys
                    .iter()
                    .filter(|key| key.publishes)
                    .map(|key| Value::Array(vec![key.pk.clone(), Value::from(key.revision)]))
                    .collect();
                if !pairs.is_empty() {
                    out.line(&json_line(&pairs))?;
                }
                processed += keys.len() as u64;
                written += pairs.len() as u64;
                progress.inc(keys.len() as u64);
                Ok(())
            },
        )?;
        progress.finish();
        out.commit()?;
        Ok(Report {
            processed,
            written,
            skipped: processed - written,
            summary: format!(
                "diff-master: {written} `{}` row(s) listed, {} not published by the model",
                args.cqrs_id,
                processed - written
            ),
        })
    })
    .await
}

pub(super) async fn diff_replica<C: CqrsConnection>(
    cli: &Cli<C>,
    args: PipeArgs,
) -> Result<Report, CliError> {
    let (ops, connect) = (cli.operations(), cli.connect());
    let queue = cli.config().queue().unwrap_or("None").to_owned();
    blocking(move || {
        let mut input = Input::open(&args.input)?;
        let (header, fields) = input.header("`<cqrs_id>,<time>` (the output of diff-master)")?;
        let replica = replica_of(&ops, &fields[0])?;
        let mut out = Output::create(&args.output, true)?;
        let mut conn = connect().map_err(CliError::database)?;
        out.line(&format!("{header},{queue}"))?;
        let progress = Progress::start("diff-replica", Unit::Bytes, input.len());
        let (mut processed, mut written) = (0u64, 0u64);
        while let Some((line, bytes)) = input.next_content_line()? {
            let pairs = parse_pairs(&input, line, &bytes)?;
            let keys: Vec<Value> = pairs.iter().map(|(pk, _)| pk.clone()).collect();
            let stored: HashMap<String, i64> = replica
                .revisions(&mut conn, &keys)
                .map_err(|e| key_error(e, &input, line))?
                .into_iter()
                .map(|(pk, revision)| (key_text(&pk), revision))
                .collect();
            let mut seen = HashSet::new();
            let differ: Vec<Value> = pairs
                .into_iter()
                .filter(|(pk, revision)| stored.get(&key_text(pk)) != Some(revision))
                .filter(|(pk, _)| seen.insert(key_text(pk)))
                .map(|(pk, _)| pk)
                .collect();
            processed += keys.len() as u64;
            written += differ.len() as u64;
            if !differ.is_empty() {
                out.line(&json_line(&differ))?;
            }
            progress.set(input.consumed());
        }
        progress.finish();
        out.commit()?;
        Ok(Report {
            processed,
            written,
            skipped: 0,
            summary: format!(
                "diff-replica: {written} of {processed} `{}` row(s) differ or are missing (queue {queue})",
                replica.cqrs_id()
            ),
        })
    })
    .await
}

/// Parses a line of diff-master: a JSON array of `[pk, cqrs_revision]` pairs.
fn parse_pairs(input: &Input, line: usize, bytes: &[u8]) -> Result<Vec<(Value, i64)>, CliError> {
    let bad = || {
        input.format_error(
            line,
            "expected a JSON array of [pk, cqrs_revision] pairs (the output of diff-master)",
        )
    };
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(bad());
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(pair) => match pair.as_slice() {
                [pk @ (Value::String(_) | Value::Number(_)), revision] => {
                    revision.as_i64().map(|r| (pk.clone(), r)).ok_or_else(bad)
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        })
        .collect()
}

pub(super) async fn deleted_diff_replica<C: CqrsConnection>(
    cli: &Cli<C>,
    args: DeletedDiffReplicaArgs,
) -> Result<Report, CliError> {
    cli.check_replica(&args.cqrs_id)?;
    let (ops, connect) = (cli.operations(), cli.connect());
    let clock = cli.config().clock().clone();
    blocking(move || {
        let replica = replica_of(&ops, &args.cqrs_id)?;
        let mut out = Output::create(&args.output, true)?;
        let mut conn = connect().map_err(CliError::database)?;
        out.line(&diff_header(replica.cqrs_id(), &clock))?;
        let total = progress_total(|| replica.count(&mut conn));
        let progress = Progress::start("deleted-diff-replica", Unit::Items("rows"), total);
        let mut written = 0u64;
        for_each_page(
            args.batch as usize,
            |after| {
                replica
                    .key_page(&mut conn, after, args.batch as usize)
                    .map_err(CliError::Runtime)
            },
            |(pk, _)| pk.clone(),
            |page| {
                let keys: Vec<Value> = page.iter().map(|(pk, _)| pk.clone()).collect();
                if !keys.is_empty() {
                    out.line(&json_line(&keys))?;
                }
                written += keys.len() as u64;
                progress.inc(keys.len() as u64);
                Ok(())
            },
        )?;
        progress.finish();
        out.commit()?;
        Ok(Report {
            processed: written,
            written,
            skipped: 0,
            summary: format!(
                "deleted-diff-replica: {written} `{}` key(s) listed",
                args.cqrs_id
            ),
        })
    })
    .await
}

pub(super) async fn deleted_diff_master<C: CqrsConnection>(
    cli: &Cli<C>,
    args: PipeArgs,
) -> Result<Report, CliError> {
    let (ops, connect) = (cli.operations(), cli.connect());
    blocking(move || {
        let mut input = Input::open(&args.input)?;
        let (header, fields) =
            input.header("`<cqrs_id>,<time>` (the output of deleted-diff-replica)")?;
        let master = master_of(&ops, &fields[0])?;
        let mut out = Output::create(&args.output, true)?;
        let mut conn = connect().map_err(CliError::database)?;
        out.line(&header)?;
        let progress = Progress::start("deleted-diff-master", Unit::Bytes, input.len());
        let (mut processed, mut written) = (0u64, 0u64);
        while let Some((line, bytes)) = input.next_content_line()? {
            let keys = parse_keys(&input, line, &bytes, "the output of deleted-diff-replica")?;
            let mut existing = HashSet::new();
            for chunk in keys.chunks(1000) {
                let filter = RowFilter {
                    pks: Some(chunk.to_vec()),
                    ..RowFilter::default()
                };
                for key in master
                    .keys(&mut conn, &filter, None, chunk.len())
                    .map_err(|e| key_error(e, &input, line))?
                {
                    existing.insert(key_text(&key.pk));
                }
            }
            let mut seen = HashSet::new();
            let gone: Vec<Value> = keys
                .iter()
                .filter(|pk| !existing.contains(&key_text(pk)) && seen.insert(key_text(pk)))
                .cloned()
                .collect();
            processed += keys.len() as u64;
            written += gone.len() as u64;
            if !gone.is_empty() {
                out.line(&json_line(&gone))?;
            }
            progress.set(input.consumed());
        }
        progress.finish();
        out.commit()?;
        Ok(Report {
            processed,
            written,
            skipped: 0,
            summary: format!(
                "deleted-diff-master: {written} of {processed} `{}` key(s) no longer on the master",
                master.cqrs_id()
            ),
        })
    })
    .await
}

pub(super) async fn deleted_sync_replica<C: CqrsConnection>(
    cli: &Cli<C>,
    args: InputArgs,
) -> Result<Report, CliError> {
    let (ops, connect) = (cli.operations(), cli.connect());
    blocking(move || {
        let mut input = Input::open(&args.input)?;
        let (_, fields) = input.header("`<cqrs_id>,<time>` (the output of deleted-diff-master)")?;
        let replica = replica_of(&ops, &fields[0])?;
        let mut conn = connect().map_err(CliError::database)?;
        let progress = Progress::start("deleted-sync-replica", Unit::Bytes, input.len());
        let (mut processed, mut deleted) = (0u64, 0u64);
        while let Some((line, bytes)) = input.next_content_line()? {
            let keys = parse_keys(&input, line, &bytes, "the output of deleted-diff-master")?;
            let count = conn
                .write_transaction(|conn| replica.delete(conn, &keys))
                .map_err(|e| key_error(e, &input, line))?;
            processed += keys.len() as u64;
            deleted += count as u64;
            progress.set(input.consumed());
        }
        progress.finish();
        Ok(Report {
            processed,
            written: deleted,
            skipped: processed - deleted.min(processed),
            summary: format!(
                "deleted-sync-replica: {deleted} `{}` row(s) deleted ({processed} key(s) read)",
                replica.cqrs_id()
            ),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_parse_strictly() {
        let input = Input::from_bytes(b"");
        assert_eq!(
            parse_pairs(&input, 2, br#"[[1, 0], ["a", 3]]"#).unwrap(),
            vec![(Value::from(1), 0), (Value::from("a"), 3)]
        );
        for bad in [
            &b"[1, 2]"[..],
            b"{}",
            b"[[1]]",
            b"[[1, \"x\"]]",
            b"[[null, 1]]",
            b"nope",
        ] {
            let error = parse_pairs(&input, 7, bad).unwrap_err().to_string();
            assert!(error.contains("line 7"), "{error}");
        }
        assert_eq!(
            parse_keys(&input, 2, br#"[1, "b"]"#, "x").unwrap(),
            vec![Value::from(1), Value::from("b")]
        );
        assert!(parse_keys(&input, 2, b"[[1]]", "x").is_err());
        assert!(parse_keys(&input, 2, b"[null]", "x").is_err());
    }

    #[test]
    fn diff_headers_are_the_reference_s() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        let clock = cqrs_core::ManualClock::new(at);
        let header = diff_header("author", &clock.clock());
        assert_eq!(header, "author,2023-11-14 22:13:20.123456+00:00");
    }
}
