//! Turns a hang of a case into a failure that says where it hung.
//!
//! Every wait of this binary has a deadline ([`TIMEOUT`](crate::TIMEOUT)), but some calls it
//! makes do not (a lock the database waits for without end, a broker call that never
//! answers). The harness names what it is doing with [`phase`]; a thread checks once a second,
//! and when one phase has lasted [`LIMIT`] (or `CQRS_MODEL_WATCHDOG_SECS`), it writes the phase, what the databases and the
//! broker are doing and where this process's threads wait to standard error (directly, past the test
//! harness's capture) and ends the process with exit code 101, as a failed test binary does.

use std::io::Write;
use std::process::Command;
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

/// Longer than anything a passing case does in one phase (each of its waits gives up after a
/// minute), far shorter than CI's patience. `CQRS_MODEL_WATCHDOG_SECS` sets another.
const LIMIT: Duration = Duration::from_secs(240);

fn limit() -> Duration {
    std::env::var("CQRS_MODEL_WATCHDOG_SECS")
        .ok()
        .and_then(|secs| secs.trim().parse().ok())
        .map_or(LIMIT, Duration::from_secs)
}

static PHASE: Mutex<Option<(Instant, String)>> = Mutex::new(None);
static START: Once = Once::new();

/// Records what the case is doing now; starts the watchdog on the first call.
pub(crate) fn phase(what: impl Into<String>) {
    START.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(watch);
        if let Err(error) = spawned {
            let _ = writeln!(std::io::stderr(), "the watchdog did not start: {error}");
        }
    });
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), what.into()));
}

/// Records that no case is running.
pub(crate) fn idle() {
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

fn watch() {
    let limit = limit();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let stuck = PHASE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(since, _)| since.elapsed() >= limit)
            .map(|(_, what)| what.clone());
        if let Some(what) = stuck {
            report(&what, limit);
            std::process::exit(101);
        }
    }
}

fn report(what: &str, limit: Duration) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(
        out,
        "\n=== master_model watchdog: stuck for {}s in: {what}",
        limit.as_secs()
    );
    let probes: [(&str, &[&str]); 6] = [
        (
            "mariadb",
            &[
                "-h127.0.0.1",
                "-uroot",
                "-e",
                "SHOW FULL PROCESSLIST; SHOW ENGINE INNODB STATUS\\G",
            ],
        ),
        (
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-c",
                "SELECT pid, state, wait_event_type, wait_event, xact_start, \
                 left(query, 200) FROM pg_stat_activity WHERE datname = 'test'",
            ],
        ),
        (
            "rabbitmqctl",
            &["list_queues", "name", "messages", "consumers"],
        ),
        (
            "rabbitmqctl",
            &["list_connections", "name", "state", "channels"],
        ),
        ("rabbitmq-diagnostics", &["alarms"]),
        ("df", &["-h", "/", "/tmp"]),
    ];
    let _ = writeln!(
        out,
        "\n=== this process's threads: name, kernel wait channel"
    );
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let read =
                |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
            let _ = writeln!(out, "{} {}", read("comm").trim(), read("wchan").trim());
        }
    }
    for (program, args) in probes {
        let _ = writeln!(out, "\n=== {program} {}", args.join(" "));
        match Command::new(program).args(args).output() {
            Ok(output) => {
                let _ = out.write_all(&output.stdout);
                let _ = out.write_all(&output.stderr);
            }
            Err(error) => {
                let _ = writeln!(out, "({program} did not run: {error})");
            }
        }
    }
    let _ = out.flush();
}
