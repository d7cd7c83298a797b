//! Private RabbitMQ nodes for the tests that stop, kill and restart brokers: a thin handle on
//! `scripts/rabbitmq-cluster.sh`, which tears the nodes down when dropped, however the test
//! ends (a failed assertion unwinds through the drop). The machine's shared broker
//! (rabbit@localhost) is never addressed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The script every operation goes through.
fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/rabbitmq-cluster.sh"
    ))
}

/// Nodes `1..=nodes` named `<name>N@localhost`, AMQP ports `port..port + nodes`; torn down on
/// drop.
pub struct Cluster {
    name: String,
    nodes: usize,
    port: u16,
    /// How long `start` took.
    pub started_in: Duration,
}

impl Cluster {
    /// Starts fresh nodes (tearing down what an earlier run left) and clusters them; panics
    /// with the script's output when that fails, after tearing down.
    pub fn start(name: &str, nodes: usize, port: u16) -> Cluster {
        let began = Instant::now();
        let mut cluster = Cluster {
            name: name.to_owned(),
            nodes,
            port,
            started_in: Duration::ZERO,
        };
        if let Err(error) = cluster.run(&["start"]) {
            // Dropping `cluster` tears down whatever came up.
            panic!("starting the RabbitMQ cluster {name}: {error}");
        }
        cluster.started_in = began.elapsed();
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(script())
            .args(args)
            .env("CQRS_CLUSTER_NAME", &self.name)
            .env("CQRS_CLUSTER_NODES", self.nodes.to_string())
            .env("CQRS_CLUSTER_PORT", self.port.to_string());
        command
    }

    /// Runs the script; its standard output, or its error output on failure.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = self
            .command(args)
            .output()
            .map_err(|e| format!("running {}: {e}", script().display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(format!(
                "rabbitmq-cluster.sh {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Node `n`'s AMQP URL.
    pub fn url(&self, n: usize) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            usize::from(self.port) + n - 1
        )
    }

    /// Every node's URL, starting with node `first` and going round.
    pub fn urls_from(&self, first: usize) -> Vec<String> {
        (0..self.nodes)
            .map(|i| self.url((first - 1 + i) % self.nodes + 1))
            .collect()
    }

    /// `rabbitmqctl stop` of node `n`: returns once its OS process has ended.
    pub fn stop_node(&self, n: usize) -> Result<(), String> {
        self.run(&["stop-node", &n.to_string()]).map(drop)
    }

    /// SIGKILL of node `n`'s Erlang VM.
    pub fn kill_node(&self, n: usize) -> Result<(), String> {
        self.run(&["kill-node", &n.to_string()]).map(drop)
    }

    /// Starts node `n` again on its data and waits until it has booted.
    pub fn start_node(&self, n: usize) -> Result<(), String> {
        self.run(&["start-node", &n.to_string()]).map(drop)
    }

    /// The number of the node leading quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> Result<usize, String> {
        let out = self.run(&["leader", queue])?;
        out.trim()
            .parse()
            .map_err(|_| format!("the leader of {queue} is {out:?}, not one of our nodes"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.run(&["teardown"]) {
            eprintln!("tearing down the RabbitMQ cluster {}: {error}", self.name);
        }
    }
}
