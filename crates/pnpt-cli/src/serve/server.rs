//! Running the service: on its own thread ([`Server`]) or until a signal ([`serve_until_signal`]).

use std::net::SocketAddr;
use std::sync::Arc;

use pnpt::burn::tensor::backend::Backend;
use pnpt::model::Detector;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::{ServeOptions, app, listen};
use crate::info::DetectorInfo;
use crate::{CliError, Result};

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
        options.check()?;
        let (listener, addr) = bind(addr)?;
        let info = crate::info::detector_info(&detector, None);
        let metrics = Arc::new(Metrics::default());
        let app = app(detector, &info, options.clone(), metrics.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let runtime = runtime(&addr.to_string())?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                listen::run(listener, app, &options, metrics, async move { rx.await.unwrap_or(()) }).await
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
    info: &DetectorInfo,
    addr: &str,
    options: ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()>
where
    Detector<B>: Send + Sync,
{
    options.check()?;
    let (listener, local) = bind(addr)?;
    let metrics = Arc::new(Metrics::default());
    let app = app(detector, info, options.clone(), metrics.clone());
    let rt = runtime(addr)?;
    let fail = |e: std::io::Error| CliError::Service { addr: local.to_string(), reason: e.to_string() };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(fail)?;
        ready(local);
        listen::run(listener, app, &options, metrics, shutdown_signal()).await.map_err(fail)
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
