//! Logging set-up. Log lines are formatted on the request's thread into a shared buffer that
//! one background thread writes to stderr every few milliseconds, so a request never waits on
//! a `write` system call and never has to wake another thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
        LogFormat::Pretty => builder.event_format(TextLine).init(),
    }
    Ok(LogGuard {
        shared,
        _thread: thread,
    })
}

/// The text format, one line per event:
/// `2026-12-06T08:10:10.358269Z  INFO orgd::http: request finished request_id=… status=200`.
/// Written directly rather than by the default formatter, whose styling, clock and per-field
/// `Debug` padding cost more than the request being logged (measured with callgrind on
/// `GET /api/organization`). orgd opens no spans, so there is no span context to print.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write_timestamp(&mut writer)?;
        write!(writer, " {:>5} {}: ", meta.level().as_str(), meta.target())?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes `message` first as it is, then `name=value` for every other field.
struct Fields<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}{value}"),
            name => write!(self.writer, "{separator}{name}={value}"),
        };
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, format_args!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, format_args!("{value}"));
    }
}

thread_local! {
    /// The last whole second formatted on this thread, and its text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), formatting the date only when the second changes.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            // `YYYY-MM-DDTHH:MM:SS` of `…SS.mmmZ`.
            let mut text = orgd_core::clock::format_ms(now.as_millis() as i64);
            text.truncate(19);
            *cached = (seconds, text);
        }
        write!(writer, "{}.{:06}Z", cached.1, now.subsec_micros())
    })
}

/// A duration as milliseconds with three decimals (`0.379`), formatted with integers: the
/// access log writes one per request.
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_keep_three_decimals() {
        assert_eq!(Millis(Duration::from_micros(379)).to_string(), "0.379");
        assert_eq!(Millis(Duration::from_micros(12_005)).to_string(), "12.005");
    }

    #[test]
    fn text_lines_read_like_the_default_format() {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .event_format(TextLine)
            .with_writer(move || capture.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(request_id = %"abc", status = 200u16, route = "/x", ok = true, latency_ms = %Millis(Duration::from_micros(1500)), "request finished");
        });
        let line = String::from_utf8(buffer.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        let (timestamp, rest) = line.split_once(' ').unwrap_or_default();
        assert_eq!(
            timestamp.len(),
            "2026-12-06T08:10:10.358269Z".len(),
            "{line}"
        );
        assert!(
            timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "{line}"
        );
        assert_eq!(
            rest,
            " INFO orgd::logging::tests: request finished request_id=abc status=200 route=\"/x\" ok=true latency_ms=1.500\n"
        );
    }
}
