//! Logging set-up. Log lines are formatted on the request's thread into a shared buffer that
//! one background thread writes to stderr every few milliseconds, so a request never waits on
//! a `write` system call and never has to wake another thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// How long a line may wait before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Past this much pending output, the writer is woken at once.
const WAKE_AT_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Bumped by `flush`; the writer acknowledges by setting `flushed` to it.
    flush_requested: u64,
    flushed: u64,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    done: Condvar,
}

#[derive(Clone)]
struct BufferWriter(Arc<Shared>);

/// One formatted event, appended as a whole when the formatter is done with it.
struct Line {
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.bytes.extend_from_slice(&self.buf);
        if pending.bytes.len() >= WAKE_AT_BYTES {
            self.shared.wake.notify_one();
        }
    }
}

impl<'a> MakeWriter<'a> for BufferWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            shared: self.0.clone(),
        }
    }
}

fn write_out(shared: &Shared) {
    let mut out = io::stderr();
    let mut batch = Vec::new();
    loop {
        let request = {
            let pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (mut pending, _) = shared
                .wake
                .wait_timeout(pending, FLUSH_EVERY)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut batch, &mut pending.bytes);
            pending.flush_requested
        };
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
            batch.clear();
        }
        let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.flushed < request && pending.bytes.is_empty() {
            pending.flushed = request;
            shared.done.notify_all();
        }
    }
}

/// Keeps the writer thread; `flush` before the process exits so no line is lost.
pub struct LogGuard {
    shared: Arc<Shared>,
    _thread: JoinHandle<()>,
}

impl LogGuard {
    pub fn flush(&self) {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.flush_requested += 1;
        let wanted = pending.flush_requested;
        self.shared.wake.notify_one();
        while pending.flushed < wanted {
            let (next, timeout) = self
                .shared
                .done
                .wait_timeout(pending, Duration::from_secs(2))
                .unwrap_or_else(|p| p.into_inner());
            pending = next;
            if timeout.timed_out() {
                break;
            }
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` chooses
/// human-readable or one JSON object per line.
pub fn init(format: LogFormat) -> io::Result<LogGuard> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("orgd-log".into())
        .spawn(move || write_out(&for_thread))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(BufferWriter(shared.clone()));
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Pretty => builder.with_ansi(false).init(),
    }
    Ok(LogGuard {
        shared,
        _thread: thread,
    })
}
