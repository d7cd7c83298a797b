//! The start of the tests' helper processes (`relay_process`, `replica_process`).

/// Sends the library's logs to stderr (`RUST_LOG`, default `warn`), runs `run`, and on a failure
/// prints `<name>: <reason>` on stderr and exits 1.
pub fn main(name: &str, run: impl FnOnce() -> Result<(), String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run() {
        eprintln!("{name}: {error}");
        std::process::exit(1);
    }
}

/// The environment variable `name`, or an error naming it.
pub fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// Resolves when the process's stdin closes (its parent closed it, or ended): the helper
/// processes' signal to stop cleanly.
pub fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    use std::io::Read;
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    closed
}
