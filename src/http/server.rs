//! The HTTP server loop: hyper's HTTP/1 connections with the limits axum's `serve` lacks —
//! a header-read timeout, an idle timeout, and a cap on open connections — so slow or silent
//! clients cannot hold descriptors and memory forever.
//!
//! - At most `max_connections` are served at once; past that the loop stops accepting and
//!   clients wait in the kernel's listen backlog (nothing is refused on purpose).
//! - A connection must deliver a request's headers within `header_read_timeout` of their
//!   first byte, and is closed after `idle_timeout` with nothing moving in either direction
//!   while no request is being handled (a handler's own time is bounded by the request
//!   deadline, a streamed body by the upload's idle timeout).
//! - A failed `accept` (usually the open-file limit) is logged and counted, and the loop
//!   backs off briefly instead of spinning.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::metrics::Metrics;

/// The limits of the listener (DESIGN.md: `ORGD_HEADER_READ_TIMEOUT`, `ORGD_IDLE_TIMEOUT`,
/// `ORGD_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// How long the loop pauses after a failed `accept`, so a full descriptor table is not
/// retried in a tight loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and waits
/// for the connections to finish their requests in flight.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // No hyper timer: hyper's own header timeout would also cut idle keep-alive
    // connections at the header deadline; `TimedIo` keeps the two apart.
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    metrics.record_accept_error();
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(TimedIo::new(stream, limits, activity.clone()));
        let service = hyper::service::service_fn({
            let router = router.clone();
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                let in_flight = activity.request_started();
                let mut router = router.clone();
                async move {
                    let response = router.call(request.map(axum::body::Body::new)).await;
                    drop(in_flight);
                    response
                }
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        metrics.connection_opened();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
            metrics.connection_closed();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What the connection's service tells its I/O: how many requests are being handled, and
/// how many were started (a new one means the headers of the previous read completed).
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that fails a read or write with `TimedOut` once its deadline passes: the
/// header-read deadline while a request's headers are arriving, the idle deadline while
/// nothing moves and no request is being handled.
struct TimedIo {
    stream: TcpStream,
    limits: ConnectionLimits,
    activity: Arc<Activity>,
    /// Last time bytes moved either way (or a request finished).
    last_progress: Instant,
    /// When the first byte of the next request's headers arrived.
    head_started: Option<Instant>,
    /// `Activity::started` when `head_started` was last reset.
    requests_seen: u64,
    was_in_flight: bool,
    timer: Pin<Box<Sleep>>,
}

impl TimedIo {
    fn new(stream: TcpStream, limits: ConnectionLimits, activity: Arc<Activity>) -> Self {
        let now = Instant::now();
        Self {
            stream,
            limits,
            activity,
            last_progress: now,
            head_started: None,
            requests_seen: 0,
            was_in_flight: false,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    /// The moment this connection times out, or `None` while a request is being handled.
    fn deadline(&mut self) -> Option<Instant> {
        let started = self.activity.started.load(Ordering::Relaxed);
        if started != self.requests_seen {
            // The service took a request: its headers are in.
            self.requests_seen = started;
            self.head_started = None;
        }
        let in_flight = self.activity.in_flight.load(Ordering::Relaxed) > 0;
        if in_flight {
            self.was_in_flight = true;
            return None;
        }
        if std::mem::take(&mut self.was_in_flight) {
            // Idle time counts from the end of the last request, not from its start.
            self.last_progress = Instant::now();
        }
        Some(match self.head_started {
            Some(first_byte) => first_byte + self.limits.header_read_timeout,
            None => self.last_progress + self.limits.idle_timeout,
        })
    }

    /// Ready with `TimedOut` when the deadline has passed; otherwise arms the timer so the
    /// task is woken at the deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(deadline) = self.deadline() else {
            return Poll::Pending;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client was too slow or idle too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// After a write: the response may have been the last thing hyper does before waiting on
    /// a read it already polled while the request was in flight (when no deadline applied),
    /// so the idle timer is armed here too, or nothing would ever close an idle connection.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.progressed();
        // Just written: the deadline is ahead, so this only registers the timer's wake-up.
        let _ = self.poll_deadline(cx);
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed();
                    let idle = this.activity.in_flight.load(Ordering::Relaxed) == 0;
                    if idle && this.head_started.is_none() {
                        this.head_started = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.wrote(cx);
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(written)) => {
                this.wrote(cx);
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Raises this process's soft open-file limit to its hard limit (one descriptor per
/// connection) and returns the limit now in force, logging both.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current?, limit.maximum);
    let raised = match hard {
        Some(hard) if hard > soft => {
            let mut wanted = limit;
            wanted.current = Some(hard);
            setrlimit(Resource::Nofile, wanted).map_or(soft, |()| hard)
        }
        _ => soft,
    };
    tracing::info!(soft, hard = ?hard, now = raised, "open-file limit");
    Some(raised)
}

/// Descriptors kept back from connections: the database pool, Redis, provider calls, report
/// files being streamed, the listener and logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// `ORGD_MAX_CONNECTIONS` when unset: what the open-file limit leaves after the reserve.
pub fn default_max_connections(open_files: Option<u64>) -> usize {
    let open_files = open_files.unwrap_or(1024);
    let available = open_files.saturating_sub(RESERVED_DESCRIPTORS).max(64);
    usize::try_from(available).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_room_for_files() {
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(100)), 64);
        assert_eq!(default_max_connections(None), 768);
        assert_eq!(default_max_connections(Some(1 << 20)), (1 << 20) - 256);
    }
}
