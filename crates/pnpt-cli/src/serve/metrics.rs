//! `GET /metrics`: request counters, refusals by reason, the `/v1/predict` latency histogram and
//! the gauges of connections, uploads and queue, as Prometheus text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pnpt::burn::tensor::backend::Backend;

use super::AppState;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Routes counted under their own name in `/metrics` (anything else is `other`).
const ROUTES: [&str; 5] = ["/", "/healthz", "/metrics", "/v1/info", "/v1/predict"];

/// Why the service turned a request or a connection away (`pnpt_refusals_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 503: every worker busy and the queue full.
    Busy,
    /// 503: the bodies held at once would pass `max_buffered`.
    Memory,
    /// 413: a body (declared or read) over `max_body`.
    BodyTooLarge,
    /// 408: a body not complete within `body_timeout_s`.
    BodyTimeout,
    /// A connection closed because its request head was not complete within `header_timeout_s`.
    HeaderTimeout,
    /// An idle connection (nothing sent since its last answer) closed after `header_timeout_s`.
    IdleTimeout,
    /// An idle connection closed to make room for a new one at `max_connections`.
    IdleEvicted,
    /// 503: a new connection at `max_connections` with no idle one to close.
    ConnectionLimit,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::Busy,
        Refusal::Memory,
        Refusal::BodyTooLarge,
        Refusal::BodyTimeout,
        Refusal::HeaderTimeout,
        Refusal::IdleTimeout,
        Refusal::IdleEvicted,
        Refusal::ConnectionLimit,
    ];

    /// The `reason` label.
    pub(super) fn name(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::Memory => "memory",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::IdleEvicted => "idle_evicted",
            Refusal::ConnectionLimit => "connection_limit",
        }
    }
}

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    pub(super) images: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    /// Connections open now.
    pub(super) connections: AtomicUsize,
    /// Predict requests whose body is being read now.
    pub(super) uploads: AtomicUsize,
}

impl Metrics {
    /// Counts one refusal.
    pub(super) fn refuse(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts every request by route and status, and times `/v1/predict`.
pub(super) async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
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

pub(super) async fn metrics_handler<B: Backend>(State(st): State<AppState<B>>) -> Response {
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
    s.push_str("# HELP pnpt_requests_in_progress Predict requests read whole and waiting for or holding a worker.\n# TYPE pnpt_requests_in_progress gauge\n");
    s.push_str(&format!("pnpt_requests_in_progress {}\n", capacity - st.admit.available_permits()));
    s.push_str("# HELP pnpt_request_capacity Workers plus queue: beyond it requests get 503.\n# TYPE pnpt_request_capacity gauge\n");
    s.push_str(&format!("pnpt_request_capacity {capacity}\n"));
    s.push_str("# HELP pnpt_refusals_total Requests and connections turned away, by reason.\n# TYPE pnpt_refusals_total counter\n");
    for (r, n) in Refusal::ALL.iter().zip(&m.refusals) {
        s.push_str(&format!("pnpt_refusals_total{{reason=\"{}\"}} {}\n", r.name(), n.load(Ordering::Relaxed)));
    }
    s.push_str("# HELP pnpt_connections_open Connections open now.\n# TYPE pnpt_connections_open gauge\n");
    s.push_str(&format!("pnpt_connections_open {}\n", m.connections.load(Ordering::Relaxed)));
    s.push_str("# HELP pnpt_uploads_in_progress Predict requests whose body is being read.\n# TYPE pnpt_uploads_in_progress gauge\n");
    s.push_str(&format!("pnpt_uploads_in_progress {}\n", m.uploads.load(Ordering::Relaxed)));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s).into_response()
}
