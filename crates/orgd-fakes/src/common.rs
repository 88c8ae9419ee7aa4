//! What every loopback fake shares: the server (`spawn`), the request recorder (`Seen`), the
//! answers (`Reply`), the injection queue (`Behaviour`) and the generic `Fake<P>` that runs one
//! provider protocol `P`.
//!
//! A fake is an axum app on `127.0.0.1:0` with a single fallback handler. The handler records
//! the request, matches it against the protocol's route templates on the **raw** path (so that
//! GitLab's `group%2Fproject` stays encoded), consumes an injected behaviour if one matches, and
//! otherwise lets the protocol do the work. Connections go through a listener of our own so that
//! a behaviour can close or reset the very connection a request came on, without answering.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body::Frame;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request body a fake reads (Slack and GitLab limits are tested slightly above 1 MB).
const MAX_BODY: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

/// One request as a fake saw it, before it answered.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The raw path, percent-encoding kept (`/api/v4/projects/acme%2Fshop`).
    pub path: String,
    /// The raw query string without `?` (empty when there was none).
    pub query: String,
    /// Header names lower-cased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body bytes exactly as received.
    pub body_raw: Vec<u8>,
    /// The body parsed as JSON, when it was JSON.
    pub json: Option<Value>,
    /// When the request was received (after its body was read); tests check pacing with it.
    pub at: Instant,
    /// The route template the request matched (`"POST /repos/{owner}/{repo}/issues"`).
    pub route: Option<&'static str>,
    /// The status answered; `None` while pending, after a hang, a disconnect or a reset.
    pub status: Option<u16>,
}

impl Seen {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A query parameter, percent-decoded (`+` is a space), or `None` when absent.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(&value.replace('+', " ")))
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body_raw).into_owned()
    }

    /// `"METHOD /raw/path"`, what matchers are compared with.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Whether `matcher` selects `seen`: `"*"` selects everything; otherwise the matcher must be a
/// substring of `"METHOD /raw/path"` or of the route template (`"POST /repos/{owner}/{repo}/issues"`).
/// A trailing `$` anchors the matcher at the end (`"POST /repos/acme/shop/issues$"` does not
/// select the comments route below it).
pub fn matches(matcher: &str, seen: &Seen) -> bool {
    if matcher == "*" {
        return true;
    }
    let candidates = [Some(seen.line()), seen.route.map(str::to_string)];
    candidates
        .into_iter()
        .flatten()
        .any(|c| match matcher.strip_suffix('$') {
            Some(anchored) => c.ends_with(anchored),
            None => c.contains(matcher),
        })
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The body of an answer.
#[derive(Clone, Debug)]
pub enum Payload {
    /// No body.
    Empty,
    /// `application/json`.
    Json(Value),
    /// `text/plain; charset=utf-8` (Slack's `ok`, GitLab's `Retry later`).
    Text(String),
    /// `text/html; charset=utf-8` (error pages, Azure DevOps' sign-in page).
    Html(String),
    /// Any bytes with any content type, e.g. a truncated JSON document.
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
}

/// A complete answer: status, extra headers and body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Extra headers; a `content-type` here replaces the payload's.
    pub headers: Vec<(String, String)>,
    pub body: Payload,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::with_payload(status, Payload::Json(body))
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::with_payload(status, Payload::Text(body.into()))
    }

    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Self::with_payload(status, Payload::Html(body.into()))
    }

    /// Arbitrary bytes, e.g. `Reply::raw(201, "application/json", "{\"id\":")` for a cut document.
    pub fn raw(status: u16, content_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        Self::with_payload(
            status,
            Payload::Raw {
                content_type: content_type.to_string(),
                bytes: bytes.into(),
            },
        )
    }

    pub fn empty(status: u16) -> Self {
        Self::with_payload(status, Payload::Empty)
    }

    fn with_payload(status: u16, body: Payload) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.headers.push((name.into(), value.to_string()));
        self
    }

    fn content_type_and_bytes(&self) -> (Option<&str>, Vec<u8>) {
        match &self.body {
            Payload::Empty => (None, Vec::new()),
            Payload::Json(v) => (Some("application/json"), v.to_string().into_bytes()),
            Payload::Text(t) => (Some("text/plain; charset=utf-8"), t.clone().into_bytes()),
            Payload::Html(h) => (Some("text/html; charset=utf-8"), h.clone().into_bytes()),
            Payload::Raw {
                content_type,
                bytes,
            } => (Some(content_type), bytes.clone()),
        }
    }

    /// Builds the response; with `cut_after`, the body is sent only up to that many bytes and
    /// the connection is then dropped (the `Content-Length` still announces the whole body).
    fn into_response(self, cut_after: Option<usize>) -> Response {
        let (content_type, bytes) = self.content_type_and_bytes();
        let content_type = content_type.map(str::to_string);
        let full_length = bytes.len();
        let body = match cut_after {
            None => Body::from(bytes),
            Some(keep) => Body::new(CutBody {
                prefix: Some(Bytes::from(bytes[..keep.min(full_length)].to_vec())),
                pause: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
            }),
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(self.status).expect("valid status code");
        let headers = response.headers_mut();
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).unwrap());
        }
        if cut_after.is_some() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(full_length));
        }
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
            let value = HeaderValue::from_str(&value).expect("valid header value");
            if name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        response
    }
}

/// A body that sends a prefix, gives hyper time to flush it, then fails: the client has the
/// status line, the headers and part of the body, then sees the connection end.
struct CutBody {
    prefix: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for CutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        ready!(self.pause.as_mut().poll(cx));
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fake: connection dropped mid-body",
        ))))
    }
}

/// Why a comment edit on a deleted comment answers what it answers (Azure DevOps and Bitbucket:
/// `outbound-apis.md` §9 marks it UNCONFIRMED and asks the fakes to model both readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EditDeleted {
    /// The edit answers 200 and the comment still reads as deleted (so a client must read first).
    #[default]
    Succeeds,
    /// The edit answers 404.
    NotFound,
}

// ---------------------------------------------------------------------------------------------
// Injections
// ---------------------------------------------------------------------------------------------

/// What a fake does instead of (or around) its normal answer, for requests selected by an
/// injection's matcher. "The work" is what the protocol normally does (create the issue, ...).
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answer this instead; no work is done.
    Respond(Reply),
    /// Wait, then do the work and answer normally.
    DelayBefore(Duration),
    /// Do the work, then wait before answering (a client timing out after a create).
    DelayAfter(Duration),
    /// Do the work and answer normally, with these headers added (Azure DevOps' delayed mode,
    /// `Retry-After` on a 200).
    WithHeaders(Vec<(String, String)>),
    /// Close the connection without answering; no work is done.
    Disconnect,
    /// Do the work, then close the connection without answering (the client sees a connection
    /// error while the object exists).
    DisconnectAfterWork,
    /// Reset the connection (TCP RST) without answering; no work is done.
    Reset,
    /// Do the work, then reset the connection without answering.
    ResetAfterWork,
    /// Do the work, send the status, the headers and only this many bytes of the body, then
    /// drop the connection.
    TruncateAfterWork(usize),
    /// Never answer and do no work (the client's timeout fires).
    Hang,
}

impl Behaviour {
    /// Answer `status` with a JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self::Respond(Reply::json(status, body))
    }

    /// Answer `status` with a plain-text body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::Respond(Reply::text(status, body))
    }

    /// Answer `status` with an HTML page (a proxy's or load balancer's error page).
    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Self::Respond(Reply::html(status, body))
    }
}

struct Injection {
    matcher: String,
    remaining: usize,
    behaviour: Behaviour,
}

// ---------------------------------------------------------------------------------------------
// Protocols and routing
// ---------------------------------------------------------------------------------------------

/// One request handed to a protocol: what was seen, which route it matched and the base URL.
pub struct Call<'a> {
    pub seen: &'a Seen,
    /// The route template matched, `None` for an unknown route.
    pub route: Option<&'static str>,
    /// Path parameters, raw (percent-encoding kept), by template name.
    pub params: HashMap<&'static str, String>,
    /// The fake's origin, `http://127.0.0.1:PORT`.
    pub base: &'a str,
}

impl Call<'_> {
    /// A path parameter as sent (still percent-encoded); empty if the route has none by that name.
    pub fn raw(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// A path parameter, percent-decoded.
    pub fn param(&self, name: &str) -> String {
        percent_decode(self.raw(name))
    }

    /// The JSON body, or `Value::Null` when the body was not JSON.
    pub fn json(&self) -> &Value {
        self.seen.json.as_ref().unwrap_or(&Value::Null)
    }
}

/// A provider's protocol: its routes and what it answers. Implementations keep their own state
/// behind `Mutex`es, so the test can inspect it through `Fake<P>`'s `Deref`.
pub trait Protocol: Send + Sync + 'static {
    /// Route templates, `"METHOD /literal/{param}/..."`, matched segment by segment against the
    /// raw path returned by `route_path`.
    const ROUTES: &'static [&'static str];

    /// Whether literal segments match case-insensitively (Azure DevOps' routes do).
    const CASE_INSENSITIVE: bool = false;

    /// The part of the raw path the routes apply to, or `None` when the path is outside the API
    /// (GitHub Enterprise strips `/api/v3`, the Jira gateway `/ex/jira/{cloudId}`).
    fn route_path<'p>(&self, path: &'p str) -> Option<&'p str> {
        Some(path)
    }

    /// Called for every request, before any injection applies (the webhook receiver records
    /// and verifies every delivery attempt here).
    fn observe(&self, _seen: &Seen) {}

    /// Does the work for one request and builds the answer.
    fn answer(&self, call: &Call<'_>) -> Reply;
}

/// Finds the first template in `routes` that matches `method` and the raw `path`.
pub fn match_route(
    routes: &'static [&'static str],
    case_insensitive: bool,
    method: &str,
    path: &str,
) -> Option<(&'static str, HashMap<&'static str, String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    routes.iter().find_map(|route| {
        let (route_method, template) = route.split_once(' ')?;
        if route_method != method {
            return None;
        }
        let parts: Vec<&'static str> = template.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (part, segment) in parts.iter().zip(&segments) {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if segment.is_empty() {
                    return None;
                }
                params.insert(name, (*segment).to_string());
            } else if !(part == segment || case_insensitive && part.eq_ignore_ascii_case(segment)) {
                return None;
            }
        }
        Some((*route, params))
    })
}

// ---------------------------------------------------------------------------------------------
// The generic fake
// ---------------------------------------------------------------------------------------------

struct Shared<P> {
    protocol: P,
    base: OnceLock<String>,
    seen: Mutex<Vec<Seen>>,
    injections: Mutex<Vec<Injection>>,
    counts: Mutex<BTreeMap<&'static str, usize>>,
}

/// A running fake of protocol `P`. Dereferences to `P` for the provider's own inspection and
/// configuration methods; the server stops when this is dropped.
pub struct Fake<P: Protocol> {
    /// The origin, `http://127.0.0.1:PORT` (providers add helpers for their API roots).
    pub url: String,
    shared: Arc<Shared<P>>,
    server: JoinHandle<()>,
}

impl<P: Protocol> Deref for Fake<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.shared.protocol
    }
}

impl<P: Protocol> Drop for Fake<P> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl<P: Protocol> Fake<P> {
    /// Serves `protocol` on a fresh loopback port.
    pub async fn start(protocol: P) -> Self {
        let shared = Arc::new(Shared {
            protocol,
            base: OnceLock::new(),
            seen: Mutex::new(Vec::new()),
            injections: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
        });
        let router = Router::new()
            .fallback(dispatch::<P>)
            .with_state(shared.clone());
        let (url, server) = spawn(router).await;
        shared.base.set(url.clone()).expect("base set once");
        Self {
            url,
            shared,
            server,
        }
    }

    /// The next `times` requests selected by `matcher` (see [`matches`]) get `behaviour`.
    /// Injections apply in the order they were added; each request consumes at most one.
    pub fn inject(&self, matcher: &str, times: usize, behaviour: Behaviour) {
        self.shared.injections.lock().unwrap().push(Injection {
            matcher: matcher.to_string(),
            remaining: times,
            behaviour,
        });
    }

    /// Each behaviour applies once, in order, to the next requests selected by `matcher`.
    pub fn script(&self, matcher: &str, behaviours: impl IntoIterator<Item = Behaviour>) {
        for behaviour in behaviours {
            self.inject(matcher, 1, behaviour);
        }
    }

    /// Drops every pending injection.
    pub fn clear_injections(&self) {
        self.shared.injections.lock().unwrap().clear();
    }

    /// How many injected answers are still pending.
    pub fn pending_injections(&self) -> usize {
        let injections = self.shared.injections.lock().unwrap();
        injections.iter().map(|i| i.remaining).sum()
    }

    /// Every request received, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests selected by `matcher` (see [`matches`]).
    pub fn seen_matching(&self, matcher: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| matches(matcher, s))
            .collect()
    }

    /// The latest request selected by `matcher`.
    pub fn last(&self, matcher: &str) -> Option<Seen> {
        self.seen_matching(matcher).pop()
    }

    /// How many requests `matcher` selects.
    pub fn count(&self, matcher: &str) -> usize {
        self.seen_matching(matcher).len()
    }

    /// Requests per route template (`"unmatched"` for unknown routes).
    pub fn route_counts(&self) -> BTreeMap<&'static str, usize> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Forgets the requests recorded so far (not the objects created).
    pub fn clear_seen(&self) {
        self.shared.seen.lock().unwrap().clear();
        self.shared.counts.lock().unwrap().clear();
    }
}

impl<P> Shared<P> {
    fn take_injection(&self, seen: &Seen) -> Option<Behaviour> {
        let mut injections = self.injections.lock().unwrap();
        let index = injections
            .iter()
            .position(|i| i.remaining > 0 && matches(&i.matcher, seen))?;
        let injection = &mut injections[index];
        injection.remaining -= 1;
        let behaviour = injection.behaviour.clone();
        if injection.remaining == 0 {
            injections.remove(index);
        }
        Some(behaviour)
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(seen) = self.seen.lock().unwrap().get_mut(index) {
            seen.status = Some(status);
        }
    }
}

async fn dispatch<P: Protocol>(State(shared): State<Arc<Shared<P>>>, request: Request) -> Response {
    let connection = request
        .extensions()
        .get::<ConnectInfo<ConnControl>>()
        .map(|c| c.0.clone());
    let (parts, body) = request.into_parts();
    let body_raw = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        json: serde_json::from_slice(&body_raw).ok(),
        body_raw,
        at: Instant::now(),
        route: None,
        status: None,
    };
    let matched = shared
        .protocol
        .route_path(&seen.path)
        .and_then(|path| match_route(P::ROUTES, P::CASE_INSENSITIVE, &seen.method, path));
    seen.route = matched.as_ref().map(|(route, _)| *route);
    let index = {
        let mut all = shared.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    *shared
        .counts
        .lock()
        .unwrap()
        .entry(seen.route.unwrap_or("unmatched"))
        .or_default() += 1;
    shared.protocol.observe(&seen);
    let behaviour = shared.take_injection(&seen);

    let base = shared.base.get().map(String::as_str).unwrap_or_default();
    let (route, params) = matched.unzip();
    let call = Call {
        seen: &seen,
        route,
        params: params.unwrap_or_default(),
        base,
    };
    let work = || shared.protocol.answer(&call);
    let drop_connection = |reset: bool| {
        match &connection {
            Some(connection) => connection.drop_connection(reset),
            None => return Reply::empty(200).into_response(Some(0)),
        }
        Reply::empty(200).into_response(None)
    };

    let (reply, cut_after) = match behaviour {
        None => (work(), None),
        Some(Behaviour::Respond(reply)) => (reply, None),
        Some(Behaviour::DelayBefore(wait)) => {
            tokio::time::sleep(wait).await;
            (work(), None)
        }
        Some(Behaviour::DelayAfter(wait)) => {
            let reply = work();
            tokio::time::sleep(wait).await;
            (reply, None)
        }
        Some(Behaviour::WithHeaders(extra)) => {
            let mut reply = work();
            reply.headers.extend(extra);
            (reply, None)
        }
        Some(Behaviour::Disconnect) => return drop_connection(false),
        Some(Behaviour::Reset) => return drop_connection(true),
        Some(Behaviour::DisconnectAfterWork) => {
            work();
            return drop_connection(false);
        }
        Some(Behaviour::ResetAfterWork) => {
            work();
            return drop_connection(true);
        }
        Some(Behaviour::TruncateAfterWork(keep)) => (work(), Some(keep)),
        Some(Behaviour::Hang) => std::future::pending().await,
    };
    shared.set_status(index, reply.status);
    reply.into_response(cut_after)
}

// ---------------------------------------------------------------------------------------------
// Serving, with control over each connection
// ---------------------------------------------------------------------------------------------

const CONN_OPEN: u8 = 0;
const CONN_CLOSE: u8 = 1;
const CONN_RESET: u8 = 2;

/// A handle on one accepted connection, handed to every request on it as `ConnectInfo`: a
/// handler marks it, and the connection then refuses to write, so hyper drops it without
/// sending a byte of the answer (closed with FIN, or with RST after `SO_LINGER` 0).
#[derive(Clone, Default)]
pub struct ConnControl(Arc<AtomicU8>);

impl ConnControl {
    fn drop_connection(&self, reset: bool) {
        let mode = if reset { CONN_RESET } else { CONN_CLOSE };
        self.0.store(mode, Ordering::SeqCst);
    }

    fn mode(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connected<IncomingStream<'_, ControlledListener>> for ConnControl {
    fn connect_info(stream: IncomingStream<'_, ControlledListener>) -> Self {
        stream.io().control.clone()
    }
}

/// A loopback TCP listener whose connections can be closed or reset from a handler.
pub struct ControlledListener(TcpListener);

impl Listener for ControlledListener {
    type Io = ControlledStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ControlledStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let stream = ControlledStream {
                        inner,
                        control: ConnControl::default(),
                    };
                    return (stream, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every write once its connection was marked to be dropped.
pub struct ControlledStream {
    inner: TcpStream,
    control: ConnControl,
}

impl ControlledStream {
    fn refused(&self) -> Option<io::Error> {
        (self.control.mode() != CONN_OPEN)
            .then(|| io::Error::new(io::ErrorKind::ConnectionAborted, "fake: connection dropped"))
    }
}

impl Drop for ControlledStream {
    fn drop(&mut self) {
        if self.control.mode() == CONN_RESET {
            // Closing with a zero linger sends RST instead of FIN.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ControlledStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ControlledStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No graceful FIN on a dropped connection: a reset must be the first thing the peer sees.
        if let Some(error) = self.refused() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `127.0.0.1:0`; returns the origin (`http://127.0.0.1:PORT`) and the
/// server task. Every request carries `ConnectInfo<ConnControl>` for its connection.
pub async fn spawn(router: Router) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<ConnControl>();
        let _ = axum::serve(ControlledListener(listener), service).await;
    });
    (format!("http://{addr}"), server)
}

// ---------------------------------------------------------------------------------------------
// Small protocol helpers
// ---------------------------------------------------------------------------------------------

/// Decodes `%XX` escapes (invalid escapes are kept as they are; invalid UTF-8 is replaced).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `(user, password)` of an `Authorization: Basic` header, if it is one and decodes.
pub fn basic_credentials(seen: &Seen) -> Option<(String, String)> {
    let value = seen.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token of an `Authorization: Bearer` header, if it is one.
pub fn bearer_token(seen: &Seen) -> Option<&str> {
    let (scheme, token) = seen.header("authorization")?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of an `Authorization: Basic` header for `user:password` (for tests and constants).
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `(year, month, day, hour, minute, second, weekday 0=Sunday)` of a Unix time, in UTC.
fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32, usize) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    (year, month, day, h as u32, m as u32, s as u32, weekday)
}

/// RFC 3339 UTC (`2026-11-30T12:34:56Z`), for `created_at`-style fields.
pub fn rfc3339(unix: u64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Jira's `X-RateLimit-Reset` form, ISO 8601 to the minute (`2026-11-30T12:35Z`).
pub fn iso_minute(unix: u64) -> String {
    let (y, mo, d, h, mi, _, _) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}Z")
}

/// An HTTP date (`Sun, 30 Nov 2026 12:34:56 GMT`), GitLab's `RateLimit-ResetTime`.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(unix);
    let month = MONTHS[mo as usize - 1];
    format!("{}, {d:02} {month} {y} {h:02}:{mi:02}:{s:02} GMT", DAYS[wd])
}

/// Characters in a JSON string value (what providers count for length limits).
pub fn char_len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        // 2026-11-30T12:34:56Z was a Monday.
        let t = 1_796_042_096;
        assert_eq!(rfc3339(t), "2026-11-30T12:34:56Z");
        assert_eq!(iso_minute(t), "2026-11-30T12:34Z");
        assert_eq!(http_date(t), "Mon, 30 Nov 2026 12:34:56 GMT");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn routes_match_on_raw_segments() {
        const ROUTES: &[&str] = &["GET /api/v4/projects/{id}", "POST /x/{a}/y"];
        let (route, params) =
            match_route(ROUTES, false, "GET", "/api/v4/projects/acme%2Fshop").unwrap();
        assert_eq!(route, "GET /api/v4/projects/{id}");
        assert_eq!(params["id"], "acme%2Fshop");
        assert!(match_route(ROUTES, false, "GET", "/api/v4/projects/acme/shop").is_none());
        assert!(match_route(ROUTES, false, "GET", "/x/1/y").is_none());
        assert!(match_route(ROUTES, false, "POST", "/X/1/Y").is_none());
        assert!(match_route(ROUTES, true, "POST", "/X/1/Y").is_some());
        assert_eq!(percent_decode("a%2Fb%20c%zz"), "a/b c%zz");
    }
}
