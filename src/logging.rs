//! Logging set-up. Log lines are formatted on the request's thread into a shared buffer that
//! one background thread writes to stderr every few milliseconds, so a request never waits on
//! a `write` system call and never has to wake another thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;
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
        append(&self.shared, &self.buf);
    }
}

/// Adds a whole line to what the writer thread writes next.
fn append(shared: &Shared, line: &[u8]) {
    let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
    pending.bytes.extend_from_slice(line);
    if pending.bytes.len() >= WAKE_AT_BYTES {
        shared.wake.notify_one();
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
        LogFormat::Pretty => {
            builder.event_format(TextLine).init();
            // Set once per process; a second `init` (never done) would keep the first.
            let _ = TEXT_SINK.set(shared.clone());
        }
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
fn write_timestamp(writer: &mut impl fmt::Write) -> fmt::Result {
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
        writer.write_str(&cached.1)?;
        writer.write_char('.')?;
        write_digits(writer, u64::from(now.subsec_micros()), 6)?;
        writer.write_char('Z')
    })
}

/// `n` in decimal, zero-padded to at least `width` digits: the access line writes several
/// per request, and `core::fmt`'s integer formatting costs more than the rest of the line.
fn write_digits(writer: &mut impl fmt::Write, mut n: u64, width: usize) -> fmt::Result {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = start.min(digits.len().saturating_sub(width));
    // Only ASCII digits were written.
    writer.write_str(std::str::from_utf8(&digits[start..]).map_err(|_| fmt::Error)?)
}

/// Where access lines go in the text format: straight into the buffer, formatted as
/// [`TextLine`] would, without `tracing`'s dispatch and field visitors (measured with `perf` at
/// a tenth of `GET /api/organization`'s user-space time).
static TEXT_SINK: OnceLock<Arc<Shared>> = OnceLock::new();

/// The target access lines are logged under (what `RUST_LOG` filters them by).
pub const ACCESS_TARGET: &str = "orgd::http";

/// The access log line of one request, at `info`.
pub struct Access<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub elapsed: Duration,
}

thread_local! {
    static ACCESS_LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Access<'_> {
    pub fn log(&self) {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return;
        }
        let Some(shared) = TEXT_SINK.get() else {
            tracing::info!(
                target: ACCESS_TARGET,
                request_id = %self.request_id,
                method = %self.method,
                route = %self.route,
                status = self.status,
                latency_ms = %Millis(self.elapsed),
                "request finished"
            );
            return;
        };
        ACCESS_LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            if self.write_text(&mut line).is_ok() {
                append(shared, line.as_bytes());
            }
        });
    }

    /// The line as [`TextLine`] prints the `tracing` event above.
    fn write_text(&self, out: &mut String) -> fmt::Result {
        write_timestamp(out)?;
        out.push_str("  INFO ");
        out.push_str(ACCESS_TARGET);
        out.push_str(": request finished request_id=");
        out.push_str(self.request_id);
        out.push_str(" method=");
        out.push_str(self.method);
        out.push_str(" route=");
        out.push_str(self.route);
        out.push_str(" status=");
        write_digits(out, u64::from(self.status), 1)?;
        out.push_str(" latency_ms=");
        write!(out, "{}", Millis(self.elapsed))?;
        out.push('\n');
        Ok(())
    }
}

/// A duration as milliseconds with three decimals (`0.379`), formatted with integers: the
/// access log writes one per request.
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX);
        write_digits(f, micros / 1000, 1)?;
        f.write_char('.')?;
        write_digits(f, micros % 1000, 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the text format wrote for the events logged inside `log`.
    fn text_of(log: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
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
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(TextLine)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    #[test]
    fn millis_keep_three_decimals() {
        assert_eq!(Millis(Duration::from_micros(379)).to_string(), "0.379");
        assert_eq!(Millis(Duration::from_micros(12_005)).to_string(), "12.005");
        assert_eq!(Millis(Duration::ZERO).to_string(), "0.000");
        assert_eq!(Millis(Duration::from_secs(61)).to_string(), "61000.000");
    }

    #[test]
    fn text_lines_read_like_the_default_format() {
        let line = text_of(|| {
            tracing::info!(request_id = %"abc", status = 200u16, route = "/x", ok = true, latency_ms = %Millis(Duration::from_micros(1500)), "request finished");
        });
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

    #[test]
    fn access_lines_are_the_text_format_of_the_event() {
        let access = Access {
            request_id: "ab12",
            method: "GET",
            route: "/api/organization",
            status: 200,
            elapsed: Duration::from_micros(2_042),
        };
        // No text sink in this process: the line goes through `tracing`.
        let through_tracing = text_of(|| access.log());
        let mut direct = String::new();
        assert!(access.write_text(&mut direct).is_ok());
        let without_time = |line: &str| line.split_once(' ').map(|(_, rest)| rest.to_string());
        assert_eq!(without_time(&direct), without_time(&through_tracing));
        assert_eq!(
            without_time(&direct).as_deref(),
            Some(
                " INFO orgd::http: request finished request_id=ab12 method=GET route=/api/organization status=200 latency_ms=2.042\n"
            )
        );
    }
}
