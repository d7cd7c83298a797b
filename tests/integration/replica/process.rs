//! A replica worker in a process of its own (the `replica_process` binary of this package), so
//! that a test can have several processes compete on one queue, as a scaled-out service does.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cqrs_diesel::Config;

use crate::support::amqp_url;

/// What a process reported last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    pub dead_lettered: u64,
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct Reported {
    latest: Counts,
    last: Option<Counts>,
}

/// A running `replica_process`; killed if dropped before [`ReplicaProcess::stop`].
pub struct ReplicaProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    reported: Arc<Mutex<Reported>>,
    reader: Option<JoinHandle<()>>,
}

fn millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// The `CQRS_*` settings that make a process consume like a runtime built from `config`.
fn config_env(config: &Config) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CQRS_AMQP_URL", amqp_url()),
        ("CQRS_EXCHANGE", config.exchange().to_owned()),
        ("CQRS_QUEUE", config.queue().unwrap_or_default().to_owned()),
        (
            "CQRS_MAX_RETRIES",
            config
                .max_retries()
                .map_or_else(|| "none".to_owned(), |n| n.to_string()),
        ),
        ("CQRS_RETRY_DELAY", millis(config.retry_delay())),
        ("CQRS_BATCH_SIZE", config.batch_size().to_string()),
        ("CQRS_MAX_BODY_SIZE", config.max_body_size().to_string()),
        ("CQRS_PREFETCH", config.prefetch().to_string()),
        (
            "CQRS_DELAY_QUEUE_MAX_SIZE",
            config.delay_queue_max_size().to_string(),
        ),
        ("CQRS_CONNECT_TIMEOUT", millis(config.connect_timeout())),
        (
            "CQRS_RECONNECT_MIN_DELAY",
            millis(config.reconnect_min_delay()),
        ),
        (
            "CQRS_RECONNECT_MAX_DELAY",
            millis(config.reconnect_max_delay()),
        ),
    ];
    if let Some(queue) = config.dead_letter_queue() {
        env.push(("CQRS_DEAD_LETTER_QUEUE", queue.to_owned()));
    }
    env
}

fn parse(line: &str) -> Option<(bool, Counts)> {
    let mut words = line.split_whitespace();
    let last = match words.next()? {
        "stats" => false,
        "final" => true,
        _ => return None,
    };
    let mut number = || words.next()?.parse().ok();
    Some((
        last,
        Counts {
            applied: number()?,
            dead_lettered: number()?,
            malformed: number()?,
        },
    ))
}

impl ReplicaProcess {
    /// Starts a process consuming `config`'s queue into the database described by `db_env`
    /// (see [`crate::db::TestDb::process_env`]).
    pub fn spawn(config: &Config, db_env: &[(&'static str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replica_process"))
            .envs(config_env(config))
            .envs(db_env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start replica_process");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("a piped stdout");
        let reported = Arc::new(Mutex::new(Reported::default()));
        let sink = Arc::clone(&reported);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((last, counts)) = parse(&line) {
                    let mut reported = sink.lock().expect("not poisoned");
                    reported.latest = counts;
                    if last {
                        reported.last = Some(counts);
                    }
                }
            }
        });
        ReplicaProcess {
            child,
            stdin,
            reported,
            reader: Some(reader),
        }
    }

    /// The counters the process reported last.
    pub fn counts(&self) -> Counts {
        self.reported.lock().expect("not poisoned").latest
    }

    /// Closes the process's stdin, which stops it cleanly, and returns its final counters.
    pub fn stop(mut self) -> Result<Counts, String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => return Err("replica_process did not stop within 30 s".into()),
                Err(error) => return Err(format!("waiting for replica_process: {error}")),
            }
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !status.success() {
            return Err(format!("replica_process ended with {status}"));
        }
        self.reported
            .lock()
            .expect("not poisoned")
            .last
            .ok_or_else(|| "replica_process ended without its final counters".to_owned())
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn report_lines_are_parsed() {
    assert_eq!(
        parse("stats 3 1 0"),
        Some((
            false,
            Counts {
                applied: 3,
                dead_lettered: 1,
                malformed: 0
            }
        ))
    );
    assert_eq!(parse("final 5 0 2").map(|(last, _)| last), Some(true));
    assert_eq!(parse("something else"), None);
    assert_eq!(parse("stats 1 2"), None);
}
