//! `pnpt serve`: the HTTP inference service (axum on tokio, HTTP/1).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/predict` | raw image bytes or `multipart/form-data` (part `image` or `file`); query `category=NAME` (skip retrieval), `map=png\|none` → JSON |
//! | `GET /v1/info` | the detector ([`crate::info::info_json`]) |
//! | `GET /healthz` | `{"status": "ok"}` |
//! | `GET /metrics` | Prometheus text: requests by route and status, `/v1/predict` latency histogram, images scored, queue |
//! | `GET /` | a web page: drop or pick an image, see verdict, score and heat map |
//!
//! `/v1/predict` answers the fields of [`crate::render::prediction_json`] plus `width` and
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

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use pnpt::burn::tensor::backend::Backend;
use pnpt::data::image::{ImageReader, Limits};
use pnpt::model::Detector;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use crate::{CliError, Result, multipart, render};

/// The web page (`GET /`).
pub const PAGE: &str = include_str!("page.html");

/// Limits and sizes of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// Inferences running at once (each on a blocking thread).
    pub workers: usize,
    /// Requests that may wait for a worker; beyond `workers + queue` the answer is 503.
    pub queue: usize,
    /// Largest request body in bytes (32 MiB).
    pub max_body: usize,
    /// Largest image width and height in pixels (8192).
    pub max_side: u32,
    /// Seconds in `Retry-After` of a 503.
    pub retry_after_s: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        // Burn's CPU backend already spreads one inference over the cores; two workers keep
        // the cores busy while one request decodes and renders.
        Self { workers: 2, queue: 32, max_body: 32 << 20, max_side: 8192, retry_after_s: 1 }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Routes counted under their own name in `/metrics` (anything else is `other`).
const ROUTES: [&str; 5] = ["/", "/healthz", "/metrics", "/v1/info", "/v1/predict"];

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    images: AtomicU64,
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

/// The service's routes for `detector` (`info`: what `GET /v1/info` answers).
pub fn router<B: Backend>(detector: Arc<Detector<B>>, info: Value, options: ServeOptions) -> Router
where
    Detector<B>: Send + Sync,
{
    let state = AppState {
        detector,
        admit: Arc::new(Semaphore::new(options.workers.max(1) + options.queue)),
        workers: Arc::new(Semaphore::new(options.workers.max(1))),
        options,
        metrics: Arc::new(Metrics::default()),
        info: Arc::new(info),
    };
    let metrics = state.metrics.clone();
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/info", get(info_handler::<B>))
        .route("/v1/predict", post(predict::<B>))
        .route("/metrics", get(metrics_handler::<B>))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "not_found", "no such route: see GET / and POST /v1/predict".into())
        })
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, track))
}

/// A service running on its own thread (tests, embedding): [`Server::stop`] shuts it down
/// gracefully.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `addr` and serves `detector` on a new thread with its own runtime.
    pub fn start<B: Backend>(detector: Arc<Detector<B>>, addr: &str, options: ServeOptions) -> Result<Self>
    where
        Detector<B>: Send + Sync,
    {
        let (listener, addr) = bind(addr)?;
        let info = crate::info::info_json(&detector, None);
        let app = router(detector, info, options);
        let (tx, rx) = oneshot::channel::<()>();
        let runtime = runtime(&addr.to_string())?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).with_graceful_shutdown(async move { rx.await.unwrap_or(()) }).await
            })
        });
        Ok(Self { addr, shutdown: Some(tx), thread: Some(thread) })
    }

    /// Stops accepting, answers the requests in progress, and waits for the thread.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => Err(CliError::Service { addr: self.addr.to_string(), reason: e.to_string() }),
            Some(Err(_)) => {
                Err(CliError::Service { addr: self.addr.to_string(), reason: "the service thread panicked".into() })
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn bind(addr: &str) -> Result<(std::net::TcpListener, SocketAddr)> {
    let fail = |e: std::io::Error| CliError::Service { addr: addr.to_string(), reason: format!("cannot listen: {e}") };
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

fn runtime(addr: &str) -> Result<tokio::runtime::Runtime> {
    // Two async threads are plenty: they only move bytes; inference has its own threads.
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| CliError::Service {
        addr: addr.to_string(),
        reason: format!("cannot start the async runtime: {e}"),
    })
}

/// Serves `detector` on `addr` until SIGTERM or Ctrl-C, then drains and returns; `ready` is
/// called with the bound address (the port chosen when `:0` was asked for).
pub fn serve_until_signal<B: Backend>(
    detector: Arc<Detector<B>>,
    info: Value,
    addr: &str,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()>
where
    Detector<B>: Send + Sync,
{
    let (listener, local) = bind(addr)?;
    let app = router(detector, info, options);
    let rt = runtime(addr)?;
    let fail = |e: std::io::Error| CliError::Service { addr: local.to_string(), reason: e.to_string() };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(fail)?;
        ready(local);
        axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(fail)
    })
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A JSON error answer, `{"error": message, "code": code}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The known categories, for `unknown_category`.
    categories: Option<Vec<String>>,
    /// Seconds for `Retry-After` (503).
    retry_after: Option<u32>,
}

fn error(status: StatusCode, code: &'static str, message: String) -> ApiError {
    ApiError { status, code, message, categories: None, retry_after: None }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(c) = self.categories {
            body["categories"] = json!(c);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

async fn info_handler<B: Backend>(State(st): State<AppState<B>>) -> Json<Value> {
    Json((*st.info).clone())
}

/// Query of `/v1/predict`.
#[derive(Debug, Deserialize)]
struct PredictQuery {
    category: Option<String>,
    map: Option<String>,
}

async fn predict<B: Backend>(
    State(st): State<AppState<B>>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError>
where
    Detector<B>: Send + Sync,
{
    let mut body = Some(body);
    let result = score(&st, query, &headers, &mut body).await;
    if let (Err(_), Some(unread)) = (&result, body.take()) {
        // An answer before the body is read (busy, bad query...) would otherwise reset the
        // connection under a client still uploading (see `read_body`).
        discard(unread, st.options.max_body.saturating_add(DRAIN)).await;
    }
    result
}

/// The work of `/v1/predict`; takes `body` out of its option when it reads it.
async fn score<B: Backend>(
    st: &AppState<B>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Json<Value>, ApiError>
where
    Detector<B>: Send + Sync,
{
    let t0 = Instant::now();
    let Query(q) = query.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_query", format!("bad query string: {e}")))?;
    let with_map = match q.map.as_deref() {
        None | Some("none") => false,
        Some("png") => true,
        Some(other) => {
            return Err(error(StatusCode::BAD_REQUEST, "bad_query", format!("map={other}: expected png or none")));
        }
    };
    let category = q.category.filter(|c| !c.is_empty());
    if let Some(c) = &category
        && st.detector.category_index(c).is_err()
    {
        let categories = Some(st.detector.categories().to_vec());
        return Err(ApiError {
            categories,
            ..error(StatusCode::BAD_REQUEST, "unknown_category", format!("unknown category `{c}`"))
        });
    }
    // Admission before the body is read, so a full service turns requests away at once.
    let Ok(_admitted) = st.admit.clone().try_acquire_owned() else {
        let message =
            format!("all {} workers busy and {} requests queued; retry later", st.options.workers, st.options.queue);
        return Err(ApiError {
            retry_after: Some(st.options.retry_after_s),
            ..error(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
        });
    };
    let bytes = read_body(body.take().unwrap_or_default(), headers, st.options.max_body).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let image_bytes = match multipart::boundary(content_type) {
        Some(b) => bytes.slice_ref(
            multipart::file_part(&bytes, &b).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_multipart", e))?,
        ),
        None => bytes,
    };
    if image_bytes.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "empty body: send the image bytes (PNG, JPEG or BMP) or a multipart form with an `image` part".into(),
        ));
    }
    let (width, height) = header_dimensions(&image_bytes)?;
    let max = st.options.max_side;
    if width > max || height > max || width == 0 || height == 0 {
        let status =
            if width == 0 || height == 0 { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::PAYLOAD_TOO_LARGE };
        return Err(error(
            status,
            "image_too_large",
            format!("image is {width} x {height} pixels; the limit is {max} x {max} (and at least 1 x 1)"),
        ));
    }
    let Ok(_worker) = st.workers.clone().acquire_owned().await else {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "busy", "the service is shutting down".into()));
    };
    let detector = st.detector.clone();
    let job = tokio::task::spawn_blocking(move || infer(&detector, &image_bytes, category.as_deref(), with_map, max));
    let mut v = job
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("inference failed: {e}")))??;
    st.metrics.images.fetch_add(1, Ordering::Relaxed);
    v["width"] = json!(width);
    v["height"] = json!(height);
    v["ms"] = json!(t0.elapsed().as_secs_f64() * 1000.0);
    Ok(Json(v))
}

/// Reads the body up to `limit` bytes; a declared or actual size beyond it is a 413. The rest
/// of an oversized body is read and dropped (up to [`DRAIN`] more bytes) before answering:
/// closing a socket with unread data resets the connection, and the client would see that
/// instead of the 413.
async fn read_body(mut body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let mut buf = Vec::with_capacity(if over { 0 } else { declared.unwrap_or(0) as usize });
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_body", format!("reading the body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            over |= seen > limit;
            if over {
                buf = Vec::new();
                if seen > limit.saturating_add(DRAIN) {
                    break;
                }
            } else {
                buf.extend_from_slice(&data);
            }
        }
    }
    if over {
        let size = declared.map_or_else(|| format!("more than {limit}"), |n| n.to_string());
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is {size} bytes; the limit is {limit}"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// How much of an oversized body is read and dropped before the 413 (see [`read_body`]).
const DRAIN: usize = 64 << 20;

/// Reads and drops a body, at most `cap` bytes of it.
async fn discard(mut body: Body, cap: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > cap {
            break;
        }
    }
}

/// Width and height from the image header, before anything is decoded.
fn header_dimensions(bytes: &[u8]) -> Result<(u32, u32), ApiError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, "undecodable_image", format!("unreadable image: {e}")))?;
    if reader.format().is_none() {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_an_image",
            "the body is not a PNG, JPEG or BMP image".into(),
        ));
    }
    reader.into_dimensions().map_err(|e| {
        error(StatusCode::UNPROCESSABLE_ENTITY, "undecodable_image", format!("unreadable image header: {e}"))
    })
}

/// Decodes and scores one image (on a blocking thread): the JSON answer.
fn infer<B: Backend>(
    detector: &Detector<B>,
    bytes: &[u8],
    category: Option<&str>,
    with_map: bool,
    max_side: u32,
) -> Result<Value, ApiError> {
    let t0 = Instant::now();
    let undecodable = |e: String| {
        error(StatusCode::UNPROCESSABLE_ENTITY, "undecodable_image", format!("cannot decode the image: {e}"))
    };
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| undecodable(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    // 16-bit RGBA at the largest side, the most a decoder may need.
    limits.max_alloc = Some(u64::from(max_side) * u64::from(max_side) * 8 + (1 << 20));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| undecodable(e.to_string()))?;
    let internal = |e: String| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let p = detector
        .predict_batch_as(std::slice::from_ref(&image), category)
        .map_err(|e| internal(e.to_string()))?
        .remove(0);
    let mut v = render::prediction_json(&p, category.is_some());
    if with_map {
        let median = detector.thresholds().pixel_median.get(&p.category).copied();
        let png = render::png(render::overlay(&image, &p, median)).map_err(internal)?;
        v["overlay_png"] = json!(base64::engine::general_purpose::STANDARD.encode(png));
    }
    v["inference_ms"] = json!(t0.elapsed().as_secs_f64() * 1000.0);
    Ok(v)
}

/// Counts every request by route and status, and times `/v1/predict`.
async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let route = ROUTES.iter().copied().find(|r| *r == path).unwrap_or("other");
    let t0 = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    if let Ok(mut map) = m.requests.lock() {
        *map.entry((route, status)).or_default() += 1;
    }
    if route == "/v1/predict" {
        let s = t0.elapsed().as_secs_f64();
        for (b, &upper) in m.buckets.iter().zip(&BUCKETS) {
            if s <= upper {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        m.latency_count.fetch_add(1, Ordering::Relaxed);
        m.latency_micros.fetch_add((s * 1e6) as u64, Ordering::Relaxed);
    }
    response
}

async fn metrics_handler<B: Backend>(State(st): State<AppState<B>>) -> Response {
    let m = &st.metrics;
    let mut s = String::new();
    s.push_str(
        "# HELP pnpt_http_requests_total HTTP requests by route and status.\n# TYPE pnpt_http_requests_total counter\n",
    );
    if let Ok(map) = m.requests.lock() {
        for ((route, status), n) in map.iter() {
            s.push_str(&format!("pnpt_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"));
        }
    }
    s.push_str("# HELP pnpt_predict_duration_seconds Wall time of POST /v1/predict.\n# TYPE pnpt_predict_duration_seconds histogram\n");
    for (b, upper) in m.buckets.iter().zip(BUCKETS) {
        s.push_str(&format!("pnpt_predict_duration_seconds_bucket{{le=\"{upper}\"}} {}\n", b.load(Ordering::Relaxed)));
    }
    let count = m.latency_count.load(Ordering::Relaxed);
    s.push_str(&format!("pnpt_predict_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n"));
    s.push_str(&format!(
        "pnpt_predict_duration_seconds_sum {}\n",
        m.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    s.push_str(&format!("pnpt_predict_duration_seconds_count {count}\n"));
    s.push_str("# HELP pnpt_images_scored_total Images scored.\n# TYPE pnpt_images_scored_total counter\n");
    s.push_str(&format!("pnpt_images_scored_total {}\n", m.images.load(Ordering::Relaxed)));
    let capacity = st.options.workers.max(1) + st.options.queue;
    s.push_str("# HELP pnpt_requests_in_progress Predict requests admitted and not yet answered.\n# TYPE pnpt_requests_in_progress gauge\n");
    s.push_str(&format!("pnpt_requests_in_progress {}\n", capacity - st.admit.available_permits()));
    s.push_str("# HELP pnpt_request_capacity Workers plus queue: beyond it requests get 503.\n# TYPE pnpt_request_capacity gauge\n");
    s.push_str(&format!("pnpt_request_capacity {capacity}\n"));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s).into_response()
}
