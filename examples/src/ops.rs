//! What an orchestrator and a metrics scraper ask a service: `/healthz` (the process answers),
//! `/readyz` (it can do its work now) and `/metrics` (Prometheus text).
//!
//! Each service adds these routes beside its API. `/readyz` answers 200 when every check
//! passes and 503 otherwise, with the checks in a JSON body:
//!
//! - the broker answers (a live probe through the service's transport);
//! - the database answers (`SELECT 1` on a pooled connection);
//! - the accounts service (a master): its relay runs and the oldest outbox entry is younger
//!   than [`Ops::max_outbox_age`], so writes are reaching the broker;
//! - the payments service (a replica): its consumer runtime runs and is subscribed.
//!
//! `/metrics` renders what the library records (see `cqrs_diesel::metric`) once
//! [`install_metrics`] has installed the Prometheus recorder; without it the route answers
//! 404, so a service embedded in a process that has its own recorder keeps that one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

use crate::error::ServiceError;

/// The settings of the operations endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ops {
    /// The oldest an outbox entry may be while the accounts service is ready (default 60 s).
    pub max_outbox_age: Duration,
}

impl Default for Ops {
    fn default() -> Self {
        Ops {
            max_outbox_age: Duration::from_secs(60),
        }
    }
}

impl Ops {
    /// The settings from the environment: `READY_MAX_OUTBOX_AGE` (seconds, default 60).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Setting`] when the value is not a number of seconds.
    pub fn from_env() -> Result<Ops, ServiceError> {
        let mut ops = Ops::default();
        if let Ok(text) = std::env::var("READY_MAX_OUTBOX_AGE")
            && !text.trim().is_empty()
        {
            let seconds: f64 = text.trim().parse().map_err(|_| ServiceError::Setting {
                setting: "READY_MAX_OUTBOX_AGE",
                reason: format!("`{text}` is not a number of seconds"),
            })?;
            ops.max_outbox_age =
                Duration::try_from_secs_f64(seconds).map_err(|error| ServiceError::Setting {
                    setting: "READY_MAX_OUTBOX_AGE",
                    reason: error.to_string(),
                })?;
        }
        Ok(ops)
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as this process's `metrics` recorder (once; later calls
/// do nothing) and describes the library's metrics. Call it before starting a service: the
/// relay and the consumer runtime register their series when they start.
///
/// # Errors
///
/// [`ServiceError::Setting`] when another recorder is installed already.
pub fn install_metrics() -> Result<(), ServiceError> {
    if PROMETHEUS.get().is_some() {
        return Ok(());
    }
    // Prometheus's naming: `_total` on counters, `_seconds` on durations.
    let handle = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .install_recorder()
        .map_err(|error| ServiceError::Setting {
            setting: "metrics recorder",
            reason: error.to_string(),
        })?;
    let _ = PROMETHEUS.set(handle);
    cqrs_diesel::metric::describe();
    Ok(())
}

/// One readiness check: its name, and `Ok(details)` or `Err(details)`.
pub(crate) type Check = (&'static str, Result<Value, Value>);

/// Runs a service's readiness checks.
pub(crate) type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<Check>> + Send>> + Send + Sync>;

/// `/healthz`, `/readyz` and `/metrics`, answering from `readiness`.
pub(crate) fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let checks = readiness().await;
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let body: serde_json::Map<String, Value> = checks
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(details) => json!({ "ok": true, "details": details }),
                Err(details) => json!({ "ok": false, "details": details }),
            };
            (name.to_owned(), value)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "checks": body })),
    )
        .into_response()
}

async fn render_metrics() -> Response {
    match PROMETHEUS.get() {
        Some(handle) => (
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder installed").into_response(),
    }
}

/// How long a readiness check waits for the database.
pub(crate) const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The broker check from a probe's result.
pub(crate) fn broker_check(reachable: bool, error: Option<String>) -> Check {
    if reachable {
        ("broker", Ok(json!("reachable")))
    } else {
        ("broker", Err(json!(error.unwrap_or_default())))
    }
}
