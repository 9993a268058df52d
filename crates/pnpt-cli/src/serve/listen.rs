//! The accept loop: one hyper HTTP/1 connection per socket, with a deadline for every request
//! head, a cap on open connections (the one idle longest is closed to make room), each
//! connection's closing counted by reason, and a graceful shutdown.
//!
//! Written here rather than taken from `axum::serve`, which has no deadline, no cap and no way
//! to close an idle connection: with it, slow uploads and idle connections were kept open for
//! as long as their clients liked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use super::ServeOptions;
use super::error::{ApiError, error};
use super::metrics::{Metrics, Refusal};

/// Connections answered 503 at once (beyond, a refused connection is closed without answer),
/// and how long one may take: a flood of refused connections holds little.
const REFUSING_AT_ONCE: usize = 64;
const REFUSE_DEADLINE: Duration = Duration::from_secs(2);
/// How long an evicted or stopped connection that is not idle after all may take to finish.
const EVICT_GRACE: Duration = Duration::from_secs(1);

/// One open connection, as the accept loop sees it.
#[derive(Default)]
struct Conn {
    /// Requests being answered on it (0: idle); an answer ends when its body is written.
    busy: AtomicUsize,
    /// When it was last active (accepted, a request begun or answered), as a tick of
    /// [`Registry::tick`]: orders the idle ones without reading a clock.
    last: AtomicU64,
    /// Bytes read from it, and that count when its last answer ended: more since then means
    /// a request head is on its way (a header timeout), none means idle (an idle timeout).
    read: AtomicU64,
    read_at_answer: AtomicU64,
    /// Wakes its task to close it.
    close: Notify,
}

#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    tick: AtomicU64,
}

impl Registry {
    fn touch(&self, conn: &Conn) {
        conn.last.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }

    /// Removes the connection idle longest and tells it to close; false when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        let Ok(mut conns) = self.conns.lock() else { return false };
        let victim = conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, c)| c.last.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(conn) => {
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks a request in progress on its connection until the answer's body is dropped.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn begin(conn: &Arc<Conn>, registry: &Arc<Registry>) -> Self {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        registry.touch(conn);
        Self { conn: conn.clone(), registry: registry.clone() }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.read_at_answer.store(self.conn.read.load(Ordering::Relaxed), Ordering::Relaxed);
        self.registry.touch(&self.conn);
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that counts the bytes read from it.
struct Counted {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.conn.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, closes the idle
/// connections and waits for the others to answer what they are doing.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    options: &ServeOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(false);
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors and the like: the connection waits in the
                    // backlog; try again shortly rather than spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if registry.len() >= options.max_connections {
                    if registry.evict_oldest_idle() {
                        metrics.refuse(Refusal::IdleEvicted);
                    } else {
                        metrics.refuse(Refusal::ConnectionLimit);
                        if let Ok(permit) = refusing.clone().try_acquire_owned() {
                            let message = format!(
                                "all {} connections are in use; retry later",
                                options.max_connections
                            );
                            let retry = options.retry_after_s;
                            tasks.spawn(async move {
                                refuse(stream, message, retry).await;
                                drop(permit);
                            });
                        }
                        continue;
                    }
                }
                let conn = Arc::new(Conn::default());
                registry.touch(&conn);
                let id = registry.tick.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut conns) = registry.conns.lock() {
                    conns.insert(id, conn.clone());
                }
                let task = Connection {
                    id,
                    conn,
                    registry: registry.clone(),
                    app: app.clone(),
                    header_timeout: options.header_timeout(),
                    metrics: metrics.clone(),
                    stopping: stopping.clone(),
                };
                tasks.spawn(task.serve(stream));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One accepted connection and what its task needs.
struct Connection {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    app: Router,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        let (conn, registry, app) = (self.conn.clone(), self.registry.clone(), self.app.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = Busy::begin(&conn, &registry);
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await.unwrap_or_else(|e| match e {});
                // Busy until hyper drops the answer's body, that is until it is written.
                Ok::<_, Infallible>(response.map(move |b| {
                    Body::new(b.map_frame(move |f| {
                        let _ = &busy;
                        f
                    }))
                }))
            }
        });
        let io = TokioIo::new(Counted { stream, conn: self.conn.clone() });
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.header_timeout).keep_alive(true);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let idle = |c: &Conn| c.busy.load(Ordering::Relaxed) == 0;
        let ended = loop {
            tokio::select! {
                result = connection.as_mut() => break Some(result),
                _ = self.conn.close.notified(), if closing.is_none() => {
                    if idle(&self.conn) {
                        break None;
                    }
                    // A request began after all: it is answered, then the connection closes.
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Box::pin(tokio::time::sleep(EVICT_GRACE)));
                }
                changed = self.stopping.changed(), if closing.is_none() => {
                    if changed.is_err() || idle(&self.conn) {
                        break None;
                    }
                    // Shutting down: the request in progress is answered first (its own
                    // deadlines bound it), so no grace timer.
                    connection.as_mut().graceful_shutdown();
                    closing = Some(Box::pin(std::future::pending::<()>()));
                }
                _ = async { if let Some(s) = closing.as_mut() { s.await } }, if closing.is_some() => break None,
            }
        };
        if let Some(Err(e)) = ended
            && e.is_timeout()
        {
            let c = &self.conn;
            let heads_arriving = c.read.load(Ordering::Relaxed) > c.read_at_answer.load(Ordering::Relaxed);
            self.metrics.refuse(if heads_arriving { Refusal::HeaderTimeout } else { Refusal::IdleTimeout });
        }
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.remove(&self.id);
        }
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the cap with 503 `connection_limit` (its first request only).
async fn refuse(stream: TcpStream, message: String, retry_after: u32) {
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let answer = ApiError {
            retry_after: Some(retry_after),
            close: true,
            ..error(StatusCode::SERVICE_UNAVAILABLE, "connection_limit", message.clone())
        };
        async move { Ok::<Response<Body>, Infallible>(answer.into_response()) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(REFUSE_DEADLINE).keep_alive(false);
    let _ = tokio::time::timeout(REFUSE_DEADLINE, builder.serve_connection(TokioIo::new(stream), service)).await;
}
