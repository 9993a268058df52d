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
//! [`ServeOptions::workers`] at a time (a semaphore), never on the async runtime. A request
//! is admitted before its body is read when fewer than `workers + queue` requests are in
//! progress; otherwise it is answered at once with 503 and `Retry-After`.
//!
//! **Errors** are JSON `{"error": message, "code": code}`: 400 `bad_query`, `unknown_category`,
//! `empty_body`, `bad_multipart`; 413 `body_too_large` (beyond [`ServeOptions::max_body`]),
//! `image_too_large` (a side beyond [`ServeOptions::max_side`], read from the header before
//! any pixel is decoded); 415 `not_an_image`; 422 `undecodable_image` (truncated or corrupt);
//! 503 `busy`; 500 `internal`; 404 `not_found`.
//!
//! **Shutdown.** On SIGTERM or Ctrl-C the listener closes, requests in progress are answered,
//! and `pnpt serve` exits 0.
mod error;
mod metrics;
mod predict;
mod server;

use std::sync::Arc;

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
use crate::render;
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

struct AppState<B: Backend> {
    detector: Arc<Detector<B>>,
    options: ServeOptions,
    /// `workers + queue` permits: one per request in progress.
    admit: Arc<Semaphore>,
    /// `workers` permits: one per running inference.
    workers: Arc<Semaphore>,
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

/// The service's routes for `detector` (`info`: what `GET /v1/info` answers).
pub fn router<B: Backend>(detector: Arc<Detector<B>>, info: &DetectorInfo, options: ServeOptions) -> Router
where
    Detector<B>: Send + Sync,
{
    let state = AppState {
        detector,
        admit: Arc::new(Semaphore::new(options.workers.max(1) + options.queue)),
        workers: Arc::new(Semaphore::new(options.workers.max(1))),
        options,
        metrics: Arc::new(Metrics::default()),
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
