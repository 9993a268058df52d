//! Reading a request body whole before the request takes a queue slot or a worker: a declared
//! size over the limit is a 413 at once, the whole body has a deadline (408), and the bytes all
//! requests hold at once have a budget (503), so slow or large uploads cannot starve the
//! workers or the memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, error};
use super::metrics::{Metrics, Refusal};

/// How much of a body answered early (413, a bad query) is still read and dropped, beyond the
/// limit, and for how long: closing a socket with unread data resets the connection, and the
/// client would see the reset instead of the answer. Both bounded, so a stalled or endless
/// upload holds nothing for long.
const LINGER_BYTES: usize = 64 << 20;
const LINGER: Duration = Duration::from_secs(2);

/// Why a body was not read to its end.
enum Cut {
    /// More than `max_body`.
    TooLarge,
    /// The memory budget is spent.
    Memory,
    /// The connection broke.
    Broken(ApiError),
}

/// The memory budget is counted in KiB so a permit count fits `u32` for any body.
const UNIT: usize = 1024;

/// A body read whole, and its share of the memory budget (returned when dropped).
pub(super) struct Upload {
    pub(super) bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// What the reader needs from the service's options and state.
pub(super) struct Reader<'a> {
    pub(super) max_body: usize,
    pub(super) timeout: Duration,
    pub(super) memory: &'a Arc<Semaphore>,
    pub(super) metrics: &'a Metrics,
}

/// Counts a body being read in `pnpt_uploads_in_progress`.
struct Reading<'a>(&'a Metrics);

impl<'a> Reading<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.uploads.fetch_add(1, Ordering::Relaxed);
        Self(m)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl Reader<'_> {
    /// Reads `body` whole (see the module documentation).
    pub(super) async fn read(&self, mut body: Body, headers: &HeaderMap) -> Result<Upload, ApiError> {
        let limit = self.max_body;
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit as u64) {
            self.metrics.refuse(Refusal::BodyTooLarge);
            linger(body, headers);
            return Err(too_large(&n.to_string(), limit));
        }
        let _reading = Reading::new(self.metrics);
        let held = match declared {
            Some(n) => match self.memory.clone().try_acquire_many_owned(units(n as usize)) {
                Ok(p) => Some(p),
                Err(_) => {
                    linger(body, headers);
                    return Err(self.no_memory());
                }
            },
            None => None,
        };
        let read = tokio::time::timeout(self.timeout, self.collect(&mut body, held)).await;
        let refusal = match read {
            Ok(Ok(upload)) => return Ok(upload),
            Ok(Err(Cut::Broken(e))) => return Err(e),
            Ok(Err(Cut::TooLarge)) => {
                self.metrics.refuse(Refusal::BodyTooLarge);
                too_large(&format!("more than {limit}"), limit)
            }
            Ok(Err(Cut::Memory)) => self.no_memory(),
            Err(_) => {
                self.metrics.refuse(Refusal::BodyTimeout);
                ApiError {
                    close: true,
                    ..error(
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        format!(
                            "the request body did not arrive within {:.1} s; send it faster or in a smaller image",
                            self.timeout.as_secs_f64()
                        ),
                    )
                }
            }
        };
        linger(body, headers);
        Err(refusal)
    }

    async fn collect(&self, body: &mut Body, mut held: Option<OwnedSemaphorePermit>) -> Result<Upload, Cut> {
        let limit = self.max_body;
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Cut::Broken(ApiError {
                    close: true,
                    ..error(StatusCode::BAD_REQUEST, "bad_body", format!("reading the body failed: {e}"))
                })
            })?;
            let Ok(data) = frame.into_data() else { continue };
            if buf.len() + data.len() > limit {
                return Err(Cut::TooLarge);
            }
            // A body without a declared length takes its share of the budget as it arrives.
            let have = held.as_ref().map_or(0, |p| p.num_permits());
            let need = units(buf.len() + data.len()) as usize;
            if need > have {
                let more = self.memory.clone().try_acquire_many_owned((need - have) as u32).map_err(|_| Cut::Memory)?;
                match held.as_mut() {
                    Some(p) => p.merge(more),
                    None => held = Some(more),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(Upload { bytes: Bytes::from(buf), _held: held })
    }

    fn no_memory(&self) -> ApiError {
        self.metrics.refuse(Refusal::Memory);
        ApiError {
            retry_after: Some(1),
            close: true,
            ..error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many request bodies held at once (max_buffered); retry later".into(),
            )
        }
    }
}

fn too_large(size: &str, limit: usize) -> ApiError {
    ApiError {
        close: true,
        ..error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is {size} bytes; the limit is {limit}"),
        )
    }
}

/// Reads and drops what is left of a body answered early, for at most [`LINGER`] and
/// [`LINGER_BYTES`], on a task of its own so the answer goes out at once. A client that waits
/// for `100 Continue` is sent nothing more: reading its body would ask it for the upload.
pub(super) fn linger(body: Body, headers: &HeaderMap) {
    let expects = headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let drain = async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}
