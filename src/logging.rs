//! Logging set-up. Log lines are formatted on the request's thread but written to stderr by
//! one background thread in batches, so a request never waits on a `write` system call.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Lines waiting to be written; when full, logging callers wait (no line is dropped).
const QUEUE: usize = 16_384;

enum Message {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

#[derive(Clone)]
struct QueueWriter(SyncSender<Message>);

/// One formatted event, sent as a whole when the formatter is done with it.
struct Line {
    buf: Vec<u8>,
    queue: SyncSender<Message>,
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
        if !self.buf.is_empty() {
            let _ = self
                .queue
                .send(Message::Line(std::mem::take(&mut self.buf)));
        }
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            queue: self.0.clone(),
        }
    }
}

fn write_lines(queue: Receiver<Message>) {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stderr());
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = queue.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// Keeps the writer thread; `flush` before the process exits so no line is lost.
pub struct LogGuard {
    queue: SyncSender<Message>,
    _thread: JoinHandle<()>,
}

impl LogGuard {
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` chooses
/// human-readable or one JSON object per line.
pub fn init(format: LogFormat) -> io::Result<LogGuard> {
    let (queue, lines) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("orgd-log".into())
        .spawn(move || write_lines(lines))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueueWriter(queue.clone()));
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Pretty => builder.with_ansi(false).init(),
    }
    Ok(LogGuard {
        queue,
        _thread: thread,
    })
}
