//! `pnpt serve`: the HTTP inference service (axum on tokio, HTTP/1).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/predict` | raw image bytes or `multipart/form-data` (part `image` or `file`); query `category=NAME` (skip retrieval), `map=png\|none` → JSON |
//! | `GET /v1/info` | the detector ([`crate::info::DetectorInfo`]) |
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /metrics` | Prometheus text: requests by route and status, `/v1/predict` latency histogram, images scored, queue |
//! | `GET /` | a web page: drop or pick an image, see verdict, score and heat map |
//!
//! `/v1/predict` answers the fields of [`crate::render::PredictionRecord`] plus `width` and
//! `height` of the upload, `ms` (request wall time), `inference_ms`, and with `map=png`
//! `overlay_png` (base64 PNG, [`crate::render::overlay`]).
//!
//! **Back-pressure.** Inference runs on blocking threads (`spawn_blocking`), at most
//! [`ServeOptions::workers`] at a time (a semaphore), never on the async runtime. A request's
//! body is read whole first (`body.rs`), so a slow upload holds its connection and nothing
//! else; then it is admitted when fewer than `workers + queue` requests are in progress, and
//! otherwise answered at once with 503 and `Retry-After`.
//!
//! **Hostile clients** (`listen.rs`, `body.rs`): a connection must send each request head
//! within [`ServeOptions::header_timeout_s`] of connecting or of its previous answer (an idle
//! keep-alive connection is closed then too), and each body within
//! [`ServeOptions::body_timeout_s`] (408, connection closed); a declared `Content-Length` over
//! [`ServeOptions::max_body`] is a 413 before any of the body is read; the bodies held at once
//! stay under [`ServeOptions::max_buffered`] (503); at most [`ServeOptions::max_connections`]
//! are open: a new one closes the connection idle longest, or is answered 503 when none is
//! idle. `/metrics` counts each refusal by reason (`pnpt_refusals_total{reason}`).
//!
//! **Errors** are JSON `{"error": message, "code": code}`: 400 `bad_query`, `unknown_category`,
//! `empty_body`, `bad_multipart`, `bad_body`; 408 `body_timeout`; 413 `body_too_large` (beyond
//! [`ServeOptions::max_body`]), `image_too_large` (a side beyond [`ServeOptions::max_side`],
//! read from the header before any pixel is decoded); 415 `not_an_image`; 422
//! `undecodable_image` (truncated or corrupt); 503 `busy`, `connection_limit`; 500 `internal`;
//! 404 `not_found`.
//!
//! **Shutdown.** On SIGTERM or Ctrl-C the listener closes, idle connections are closed,
//! requests in progress are answered, and `pnpt serve` exits 0.
mod body;
mod error;
mod listen;
mod metrics;
mod predict;
mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use burn::config::Config;
use pnpt::burn::tensor::backend::Backend;
use pnpt::model::Detector;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::info::DetectorInfo;
use crate::{CliError, Result, render};
use error::error;
use metrics::{Metrics, metrics_handler, track};
use predict::predict;
pub use server::{Server, serve_until_signal};

/// The web page (`GET /`).
pub const PAGE: &str = include_str!("page.html");

/// Limits and sizes of the service. Burn's `Config` derive writes the `with_*` setters (code
/// outside the crate builds it with them: `#[non_exhaustive]` refuses struct literals there, so
/// adding an option breaks no caller).
#[derive(Config, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Inferences running at once (each on a blocking thread). Burn's CPU backend already
    /// spreads one inference over the cores; two workers keep the cores busy while one request
    /// decodes and renders.
    #[config(default = 2)]
    pub workers: usize,
    /// Requests that may wait for a worker; beyond `workers + queue` the answer is 503.
    #[config(default = 32)]
    pub queue: usize,
    /// Largest request body in bytes (32 MiB).
    #[config(default = "32 << 20")]
    pub max_body: usize,
    /// Largest image width and height in pixels (8192).
    #[config(default = 8192)]
    pub max_side: u32,
    /// Seconds in `Retry-After` of a 503.
    #[config(default = 1)]
    pub retry_after_s: u32,
    /// Seconds a connection has to send a whole request head, from when it connects or from
    /// its previous answer; then it is closed (an idle keep-alive connection too).
    #[config(default = 10.0)]
    pub header_timeout_s: f64,
    /// Seconds a request has to send its whole body, from its head; then 408 and the
    /// connection is closed. 32 MiB at 10 Mbit/s take 27 s.
    #[config(default = 60.0)]
    pub body_timeout_s: f64,
    /// Connections open at once; at the cap a new one closes the one idle longest, or is
    /// answered 503 when none is idle.
    #[config(default = 256)]
    pub max_connections: usize,
    /// Bytes of request bodies held at once, by uploads being read and requests waiting or
    /// running (256 MiB); beyond it 503. At least `max_body`.
    #[config(default = "256 << 20")]
    pub max_buffered: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServeOptions {
    /// Options that cannot work are [`CliError::Arguments`]: a deadline that is not a positive
    /// number of seconds, no connection, a body budget below one largest body.
    pub fn check(&self) -> Result<()> {
        for (name, s) in [("header_timeout_s", self.header_timeout_s), ("body_timeout_s", self.body_timeout_s)] {
            if !(s.is_finite() && s > 0.0 && s < 1e9) {
                return Err(CliError::Arguments(format!("serve: {name} {s}: expected a positive number of seconds")));
            }
        }
        if self.max_connections == 0 {
            return Err(CliError::Arguments("serve: max_connections must be at least 1".into()));
        }
        if self.max_buffered < self.max_body {
            return Err(CliError::Arguments(format!(
                "serve: max_buffered ({} bytes) is below max_body ({} bytes): no body of the largest size could be read",
                self.max_buffered, self.max_body
            )));
        }
        Ok(())
    }

    fn header_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_timeout_s)
    }

    fn body_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.body_timeout_s)
    }
}

struct AppState<B: Backend> {
    detector: Arc<Detector<B>>,
    options: ServeOptions,
    /// `workers + queue` permits: one per request in progress.
    admit: Arc<Semaphore>,
    /// `workers` permits: one per running inference.
    workers: Arc<Semaphore>,
    /// `max_buffered` in KiB: the bodies held at once.
    memory: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    info: Arc<Value>,
}

impl<B: Backend> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            detector: self.detector.clone(),
            options: self.options.clone(),
            admit: self.admit.clone(),
            workers: self.workers.clone(),
            memory: self.memory.clone(),
            metrics: self.metrics.clone(),
            info: self.info.clone(),
        }
    }
}

/// `GET /healthz`.
#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// The service's routes for `detector` (`info`: what `GET /v1/info` answers). Served by
/// [`Server`] or [`serve_until_signal`], which add the limits on connections; a router served
/// some other way has the limits on requests only.
pub fn router<B: Backend>(detector: Arc<Detector<B>>, info: &DetectorInfo, options: ServeOptions) -> Router
where
    Detector<B>: Send + Sync,
{
    app(detector, info, options, Arc::new(Metrics::default()))
}

fn app<B: Backend>(
    detector: Arc<Detector<B>>,
    info: &DetectorInfo,
    options: ServeOptions,
    metrics: Arc<Metrics>,
) -> Router
where
    Detector<B>: Send + Sync,
{
    let state = AppState {
        detector,
        admit: Arc::new(Semaphore::new(options.workers.max(1) + options.queue)),
        workers: Arc::new(Semaphore::new(options.workers.max(1))),
        memory: Arc::new(Semaphore::new(options.max_buffered.div_ceil(1024).min(Semaphore::MAX_PERMITS))),
        options,
        metrics,
        info: Arc::new(render::sorted_json(info)),
    };
    let metrics = state.metrics.clone();
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { Json(Health { status: "ok" }) }))
        .route("/v1/info", get(info_handler::<B>))
        .route("/v1/predict", post(predict::<B>))
        .route("/metrics", get(metrics_handler::<B>))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "not_found", "no such route: see GET / and POST /v1/predict".into())
        })
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, track))
}

async fn info_handler<B: Backend>(State(st): State<AppState<B>>) -> Json<Value> {
    Json((*st.info).clone())
}
