//! `POST /v1/predict`: the body read whole ([`super::body`]), then admission, decoding and
//! scoring on a blocking thread.

use std::io::Cursor;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use pnpt::burn::tensor::backend::Backend;
use pnpt::data::image::{ImageReader, Limits};
use pnpt::model::Detector;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, error};
use super::metrics::Refusal;
use super::{AppState, body};
use crate::render::{self, PredictionRecord};
use crate::{Result, multipart};

/// Query of `/v1/predict`.
#[derive(Debug, Deserialize)]
pub(super) struct PredictQuery {
    category: Option<String>,
    map: Option<String>,
}

pub(super) async fn predict<B: Backend>(
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
        // An answer before the body is read (a bad query...) would otherwise reset the
        // connection under a client still uploading.
        body::linger(unread, &headers);
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
        && st.detector.model().category_index(c).is_err()
    {
        let categories = Some(st.detector.categories().to_vec());
        return Err(ApiError {
            categories,
            ..error(StatusCode::BAD_REQUEST, "unknown_category", format!("unknown category `{c}`"))
        });
    }
    // The whole body before a queue slot: a slow upload holds a connection, never a worker.
    let reader = body::Reader {
        max_body: st.options.max_body,
        timeout: st.options.body_timeout(),
        memory: &st.memory,
        metrics: &st.metrics,
    };
    let upload = reader.read(body.take().unwrap_or_default(), headers).await?;
    let Ok(_admitted) = st.admit.clone().try_acquire_owned() else {
        st.metrics.refuse(Refusal::Busy);
        let message =
            format!("all {} workers busy and {} requests queued; retry later", st.options.workers, st.options.queue);
        return Err(ApiError {
            retry_after: Some(st.options.retry_after_s),
            ..error(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
        });
    };
    let bytes = upload.bytes.clone();
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
    let inferred = job
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("inference failed: {e}")))??;
    // The upload's share of the memory budget is returned only now: its bytes lived until here.
    drop(upload);
    st.metrics.images.fetch_add(1, Ordering::Relaxed);
    let answer = Answer { inferred, width, height, ms: t0.elapsed().as_secs_f64() * 1000.0 };
    Ok(Json(render::sorted_json(&answer)))
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

/// The answer of `/v1/predict`.
#[derive(Serialize)]
struct Answer {
    #[serde(flatten)]
    inferred: Inferred,
    /// The upload's size.
    width: u32,
    height: u32,
    /// Request wall time.
    ms: f64,
}

/// What [`infer`] found.
#[derive(Serialize)]
struct Inferred {
    #[serde(flatten)]
    prediction: PredictionRecord,
    /// Base64 PNG of the overlay, with `map=png`.
    #[serde(skip_serializing_if = "Option::is_none")]
    overlay_png: Option<String>,
    /// Decoding and scoring time.
    inference_ms: f64,
}

/// Decodes and scores one image (on a blocking thread).
fn infer<B: Backend>(
    detector: &Detector<B>,
    bytes: &[u8],
    category: Option<&str>,
    with_map: bool,
    max_side: u32,
) -> Result<Inferred, ApiError> {
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
    let images = std::slice::from_ref(&image);
    let p = match category {
        Some(c) => detector.predict_as(images, c),
        None => detector.predict(images),
    }
    .map_err(|e| internal(e.to_string()))?
    .remove(0);
    let overlay_png = if with_map {
        let median = detector.post().thresholds().pixel_median.get(&p.category).copied();
        let png = render::png(render::overlay(&image, &p, median)).map_err(internal)?;
        Some(base64::engine::general_purpose::STANDARD.encode(png))
    } else {
        None
    };
    let prediction = PredictionRecord::new(&p, category.is_some());
    Ok(Inferred { prediction, overlay_png, inference_ms: t0.elapsed().as_secs_f64() * 1000.0 })
}
