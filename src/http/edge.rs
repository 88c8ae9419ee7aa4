//! The one layer every response goes through: request id, CORS, panic guard, deadline, one
//! log line and the request metrics, security headers and the rate-limit headers of whichever
//! bucket counted the request.
//!
//! One hand-written service instead of a stack of generic ones (tower-http's CORS and panic
//! layers, axum's `from_fn`): each of those boxed the request's future again, cloned the
//! routes below it and moved the request through another state machine, measured at about a
//! fifth of `GET /api/organization`'s user-space time.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Layer, Service};

use crate::config::Environment;
use crate::error::{ApiError, DatabaseOutage};
use crate::request_id::RequestContext;
use crate::state::AppState;

pub(super) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every route (and the fallbacks) in [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer {
    app: AppState,
    cors: Arc<Cors>,
}

impl EdgeLayer {
    pub fn new(app: &AppState) -> Self {
        Self {
            app: app.clone(),
            cors: Arc::new(Cors::new(app.config.cors_origins.clone())),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            app: self.app.clone(),
            cors: self.cors.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    app: AppState,
    cors: Arc<Cors>,
}

/// What the log line, the metrics and the response headers need of the request.
struct Facts {
    started: Instant,
    context: Arc<RequestContext>,
    method: Method,
    route: Route,
    /// The `Origin` to answer with CORS headers, when it is an allowed one.
    origin: Option<HeaderValue>,
}

/// Which route took the request.
enum Route {
    Matched(MatchedPath),
    /// None did: the path as sent, which the log line names (the metrics say `unmatched`).
    Unmatched(String),
}

impl Route {
    fn of(req: &Request) -> Self {
        match req.extensions().get::<MatchedPath>() {
            Some(matched) => Self::Matched(matched.clone()),
            None => Self::Unmatched(req.uri().path().to_string()),
        }
    }

    fn matched(&self) -> Option<&str> {
        match self {
            Self::Matched(matched) => Some(matched.as_str()),
            Self::Unmatched(_) => None,
        }
    }

    /// As the log names it: its pattern, or the path as sent.
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(matched) => matched.as_str(),
            Self::Unmatched(path) => path,
        }
    }
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let facts = Facts {
            started: Instant::now(),
            context: RequestContext::new(
                incoming_request_id(req.headers()).unwrap_or_else(new_request_id),
            ),
            method: req.method().clone(),
            route: Route::of(&req),
            origin: self.cors.allowed_origin(req.headers()),
        };
        let app = self.app.clone();
        if Cors::is_preflight(&req) {
            let answer = self.cors.preflight(facts.origin.clone());
            return Box::pin(async move { Ok(finish(&app, facts, answer)) });
        }
        let handled = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        Box::pin(async move {
            let response = match handled {
                Ok(handled) => run(&app, &facts, handled).await,
                Err(panicked) => panic_response(panicked),
            };
            Ok(finish(&app, facts, response))
        })
    }
}

/// Runs the route's future as the request of `facts`, within its deadline; a panic is a 500.
async fn run(
    app: &AppState,
    facts: &Facts,
    handled: impl Future<Output = Result<Response, Infallible>>,
) -> Response {
    let guarded = AssertUnwindSafe(handled).catch_unwind();
    let scoped = crate::request_id::scope(facts.context.clone(), guarded);
    let outcome = match deadline(app, &facts.method, facts.route.matched()) {
        Some(deadline) => tokio::time::timeout(deadline, scoped).await,
        None => Ok(scoped.await),
    };
    let Ok(finished) = outcome else {
        tracing::warn!(
            request_id = %facts.context.id,
            method = %facts.method,
            route = %facts.route.as_str(),
            "request deadline exceeded"
        );
        return ApiError::DeadlineExceeded.into_response();
    };
    match finished {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(panicked) => panic_response(panicked),
    }
}

/// A panic becomes a 500 in the envelope; the payload is logged, never sent.
fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::internal(
        "Internal error",
        anyhow::anyhow!("handler panicked: {detail}"),
    )
    .into_response()
}

/// The headers, the log line and the metrics every response gets.
fn finish(app: &AppState, facts: Facts, mut response: Response) -> Response {
    if response.extensions().get::<DatabaseOutage>().is_some() {
        app.db.record_outage();
    }
    // Any change that succeeded may have queued an event in its transaction (a finished run,
    // a member, a crossed threshold…): this instance's delivery worker looks at once, without
    // the request waiting for it.
    if !facts.method.is_safe() && response.status().is_success() {
        app.wake_outbox();
    }
    let headers = response.headers_mut();
    // Room for what is added below at once: grown one insert at a time, the map was
    // re-hashed twice per response (a tenth of the hot path's user time was in the map).
    headers.reserve(EDGE_HEADERS);
    if let Some(decision) = facts.context.decision() {
        decision.write_headers(headers);
    }
    if let Ok(value) = HeaderValue::from_str(&facts.context.id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    security_headers(app, headers);
    Cors::answer_headers(facts.origin, headers);
    let status = response.status().as_u16();
    let elapsed = facts.started.elapsed();
    app.metrics
        .record_request(facts.route.matched(), &facts.method, status, elapsed);
    // One line per request; a span per request would cost more than the request itself.
    crate::logging::Access {
        request_id: &facts.context.id,
        method: facts.method.as_str(),
        route: facts.route.as_str(),
        status,
        elapsed,
    }
    .log();
    response
}

/// The most headers `finish` adds: three rate-limit, the request id, four security, `Vary`
/// and two CORS.
const EDGE_HEADERS: usize = 11;

fn security_headers(app: &AppState, headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if app.config.environment == Environment::Production {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

/// 16 random hex digits.
fn new_request_id() -> String {
    orgd_core::ids::random_hex(8)
}

fn incoming_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    sane.then(|| value.to_string())
}

/// Routes bounded by their own budget instead of `ORGD_REQUEST_TIMEOUT`: report files stream
/// for as long as bytes keep moving (the connection's idle timeout cuts a stalled one), and
/// routes that call a provider are bounded by `ORGD_PROVIDER_TIMEOUT` and its retries and
/// keep their own 502/503 answers.
const OWN_BUDGET: &[(Method, &str)] = &[
    (Method::PUT, "/api/executions/{taskId}/reports/{*path}"),
    (Method::GET, "/api/executions/{taskId}/reports/{*path}"),
    (Method::POST, "/api/executions/{taskId}/analysis"),
    (Method::POST, "/api/linear/issues"),
    (Method::POST, "/api/monday/items"),
    (Method::POST, "/api/jira/issues"),
    (Method::POST, "/api/github/issues"),
    (Method::POST, "/api/gitlab/issues"),
    (Method::POST, "/api/bitbucket/issues"),
    (Method::POST, "/api/azuredevops/workitems"),
    (Method::PUT, "/api/integrations/{provider}"),
];

/// The deadline of a request to `route`, `None` for the routes with their own budget.
fn deadline(app: &AppState, method: &Method, route: Option<&str>) -> Option<Duration> {
    let own_budget = route.is_some_and(|route| {
        OWN_BUDGET
            .iter()
            .any(|(m, path)| m == method && *path == route)
    });
    (!own_budget).then_some(app.config.limits.request_timeout)
}

/// CORS (API.md, Conventions): the origins in `ORGD_CORS_ORIGINS` get the CORS headers and
/// preflight answers for every method and the four request headers the API reads; any other
/// origin gets none.
struct Cors {
    origins: Vec<HeaderValue>,
}

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET,POST,PUT,PATCH,DELETE,OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("authorization,content-type,x-api-key,idempotency-key");
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static(
    "x-ratelimit-limit,x-ratelimit-remaining,x-ratelimit-reset,retry-after,x-request-id,idempotent-replayed",
);
/// Browsers may reuse a preflight answer this long.
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
/// Every answer depends on these request headers (for caches between browser and API).
const VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

impl Cors {
    fn new(origins: Vec<HeaderValue>) -> Self {
        Self { origins }
    }

    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.origins.contains(origin).then(|| origin.clone())
    }

    fn is_preflight(req: &Request) -> bool {
        req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight: what may be sent, to an allowed origin; nothing to another.
    fn preflight(&self, origin: Option<HeaderValue>) -> Response {
        let mut response = StatusCode::OK.into_response();
        if origin.is_some() {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        }
        response
    }

    /// The headers every answer carries: `Vary`, and for an allowed origin the origin itself
    /// and which response headers its scripts may read.
    fn answer_headers(origin: Option<HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, VARY);
        if let Some(origin) = origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    type Outcome = anyhow::Result<()>;

    async fn app() -> anyhow::Result<(tempfile::TempDir, AppState)> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/edge.db?mode=rwc", dir.path().display());
        let config = crate::Config::development(dir.path().join("data"), url)?;
        let app = AppState::build(config, None).await?;
        Ok((dir, app))
    }

    /// A request to `/x`; with an origin, a preflight's headers.
    fn request(method: Method, origin: Option<&str>) -> anyhow::Result<Request> {
        let mut builder = Request::builder().method(method).uri("/x");
        if let Some(origin) = origin {
            builder = builder
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH");
        }
        Ok(builder.body(Body::empty())?)
    }

    async fn error_of(response: Response) -> anyhow::Result<serde_json::Value> {
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    #[test]
    fn new_request_ids_are_16_hex_digits() {
        let ids: Vec<String> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[tokio::test]
    async fn a_panic_while_handling_or_before_is_a_500_in_the_envelope() -> Outcome {
        let (_dir, app) = app().await?;
        let layer = EdgeLayer::new(&app);
        let in_handler = layer.layer(tower::service_fn(|_: Request| async {
            if true {
                panic!("secret detail");
            }
            Ok::<Response, Infallible>(StatusCode::OK.into_response())
        }));
        let in_call = layer.layer(tower::service_fn(
            |_: Request| -> std::future::Ready<Result<Response, Infallible>> {
                panic!("secret detail")
            },
        ));
        for response in [
            in_handler.oneshot(request(Method::GET, None)?).await,
            in_call.oneshot(request(Method::GET, None)?).await,
        ] {
            let Ok(response) = response;
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
            assert!(response.headers().contains_key(REQUEST_ID_HEADER));
            let body = error_of(response).await?;
            assert_eq!(body["error"], "Internal error");
            assert!(!body.to_string().contains("secret detail"), "{body}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn preflights_and_cors_headers_only_for_configured_origins() -> Outcome {
        let (_dir, app) = app().await?;
        let called = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let routes = {
            let called = called.clone();
            tower::service_fn(move |_: Request| {
                called.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<Response, Infallible>(StatusCode::OK.into_response()) }
            })
        };
        let edge = EdgeLayer::new(&app).layer(routes);
        let cors_headers = |response: &Response| {
            let mut names: Vec<String> = response
                .headers()
                .keys()
                .map(|name| name.as_str().to_string())
                .filter(|name| name.starts_with("access-control-"))
                .collect();
            names.sort();
            names
        };

        let Ok(allowed) = edge
            .clone()
            .oneshot(request(Method::OPTIONS, Some("http://localhost:5173"))?)
            .await;
        assert_eq!(allowed.status(), StatusCode::OK);
        assert_eq!(
            cors_headers(&allowed),
            [
                "access-control-allow-headers",
                "access-control-allow-methods",
                "access-control-allow-origin",
                "access-control-expose-headers",
                "access-control-max-age"
            ]
        );
        assert_eq!(
            allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:5173"
        );
        // A preflight is answered here; the routes never see it.
        assert_eq!(called.load(std::sync::atomic::Ordering::SeqCst), 0);

        let Ok(other) = edge
            .clone()
            .oneshot(request(Method::OPTIONS, Some("https://evil.example"))?)
            .await;
        assert!(
            cors_headers(&other).is_empty(),
            "{:?}",
            cors_headers(&other)
        );
        let Ok(no_origin) = edge.clone().oneshot(request(Method::GET, None)?).await;
        assert!(cors_headers(&no_origin).is_empty());
        assert_eq!(no_origin.headers()[header::VARY], VARY);
        assert_eq!(called.load(std::sync::atomic::Ordering::SeqCst), 1);
        Ok(())
    }
}
