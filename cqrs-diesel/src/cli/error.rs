//! The errors of operator commands, each with its exit code.

use std::path::PathBuf;

use crate::ops::Rejected;

/// Why an operator command failed. Printed as one line `error: ...` that says what to do.
///
/// [`exit_code`](CliError::exit_code) is 2 for bad usage or input (fix the command line or the
/// file), 1 for a runtime failure (database, broker, records refused while the others were
/// loaded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command line does not parse (clap's own message, with the usage), or help or the
    /// version was asked for (exit code 0).
    #[error("{}", .0.render().to_string().trim_end())]
    Usage(#[from] clap::Error),

    /// No model with this `cqrs_id` is registered on this side.
    #[error("{}", unknown_cqrs_id(.side, .cqrs_id, .known))]
    UnknownCqrsId {
        /// `master` or `replica`.
        side: &'static str,
        /// The `cqrs_id` asked for.
        cqrs_id: String,
        /// The `cqrs_id`s registered on that side.
        known: Vec<&'static str>,
    },

    /// A filter is malformed, or the database refused it (a `--where` condition, a primary
    /// key of the wrong type).
    #[error("bad filter: {0}")]
    Filter(String),

    /// An argument is invalid in combination with the others or with the configuration.
    #[error("{0}")]
    Invalid(String),

    /// The input file cannot be opened or read.
    #[error("cannot read {}: {source}", .path.display())]
    Input {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// What the system reported.
        #[source]
        source: std::io::Error,
    },

    /// The input is not in the expected format; nothing was written.
    #[error("{}: line {line}: {reason}", .path.display())]
    Format {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        reason: String,
    },

    /// The output file exists and `--force` was not given.
    #[error("{} exists; choose another file with -o or pass --force to replace it", .0.display())]
    OutputExists(PathBuf),

    /// The output cannot be written; a file being written was removed.
    #[error("cannot write {}: {source}", .path.display())]
    Output {
        /// The file (`-` for standard output).
        path: PathBuf,
        /// What the system reported.
        #[source]
        source: std::io::Error,
    },

    /// The database or the broker failed.
    #[error(transparent)]
    Runtime(#[from] crate::Error),

    /// Publishing stopped on a broker error; the messages before were confirmed.
    #[error(
        "publishing stopped after {published} message(s) were confirmed: {source}; run the command again when the cause is fixed (replicas apply a SYNC twice harmlessly)"
    )]
    Publish {
        /// Messages the broker confirmed before the failure.
        published: u64,
        /// The broker error.
        #[source]
        source: cqrs_core::Error,
    },

    /// Some records of a bulk load were refused (each was reported with its line); the others
    /// were loaded.
    #[error("{} record(s) rejected (lines {}), {loaded} loaded; fix them and load those lines again", .rejected.len(), lines(.rejected))]
    Rejected {
        /// Records written.
        loaded: u64,
        /// The refused records.
        rejected: Vec<Rejected>,
    },

    /// Some dead letters could not be republished; they are still in the dead-letter queue.
    #[error("{} dead letter(s) could not be retried and stay in `{queue}` ({retried} retried): {}", .left.len(), listed(.left))]
    NotRetried {
        /// The dead-letter queue.
        queue: String,
        /// Dead letters republished and removed.
        retried: u64,
        /// Why each of the others was left.
        left: Vec<String>,
    },
}

impl CliError {
    /// The process exit code: 0 for help and version, 2 for bad usage or input, 1 for runtime
    /// failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(error) => u8::try_from(error.exit_code()).unwrap_or(2),
            CliError::UnknownCqrsId { .. }
            | CliError::Filter(_)
            | CliError::Invalid(_)
            | CliError::Input { .. }
            | CliError::Format { .. }
            | CliError::OutputExists(_) => 2,
            CliError::Runtime(crate::Error::Transport(error)) if is_config(error) => 2,
            CliError::Output { .. }
            | CliError::Runtime(_)
            | CliError::Publish { .. }
            | CliError::Rejected { .. }
            | CliError::NotRetried { .. } => 1,
        }
    }

    pub(crate) fn database(error: impl Into<crate::Error>) -> Self {
        CliError::Runtime(error.into())
    }

    pub(crate) fn broker(error: cqrs_core::Error) -> Self {
        CliError::Runtime(crate::Error::Transport(error))
    }
}

fn is_config(error: &cqrs_core::Error) -> bool {
    matches!(
        error,
        cqrs_core::Error::Config { .. } | cqrs_core::Error::UnknownCqrsIds { .. }
    )
}

fn unknown_cqrs_id(side: &str, cqrs_id: &str, known: &[&str]) -> String {
    if known.is_empty() {
        format!("unknown cqrs_id `{cqrs_id}`: this service registers no {side} model")
    } else {
        format!(
            "unknown cqrs_id `{cqrs_id}`: the {side} models of this service are {}",
            known
                .iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn listed(reasons: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = reasons
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if reasons.len() > SHOWN {
        text.push_str(&format!(
            "; and {} more (each was printed above)",
            reasons.len() - SHOWN
        ));
    }
    text
}

fn lines(rejected: &[Rejected]) -> String {
    const SHOWN: usize = 20;
    let mut text = rejected
        .iter()
        .take(SHOWN)
        .map(|r| r.line.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if rejected.len() > SHOWN {
        text.push_str(&format!(", and {} more", rejected.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_list_the_registered_ones() {
        let error = CliError::UnknownCqrsId {
            side: "master",
            cqrs_id: "nope".into(),
            known: vec!["account", "author"],
        };
        assert_eq!(
            error.to_string(),
            "unknown cqrs_id `nope`: the master models of this service are `account`, `author`"
        );
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn rejected_records_name_their_lines() {
        let error = CliError::Rejected {
            loaded: 3,
            rejected: vec![
                Rejected {
                    line: 2,
                    reason: "x".into(),
                },
                Rejected {
                    line: 5,
                    reason: "y".into(),
                },
            ],
        };
        assert!(
            error
                .to_string()
                .starts_with("2 record(s) rejected (lines 2, 5), 3 loaded")
        );
        assert_eq!(error.exit_code(), 1);
    }
}
