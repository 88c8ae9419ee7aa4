//! Faults injected, not waited for (DESIGN.md, Testing): a lock held from a second
//! connection, a SQLite database made full, a database link cut or gone silent, a Redis that
//! accepts and never answers, clients that send headers a byte at a time or nothing at all.
//! Every wait is bounded, an outage answers 503 with `Retry-After`, and nothing sticks once
//! the fault is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{AnyPool, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::backend_tests;
use crate::helpers::{Backend, Session, TestApp, assert_error, call};

backend_tests!(
    a_held_lock_answers_503_and_changes_nothing,
    the_request_deadline_answers_503_and_frees_the_connection,
    a_closed_database_answers_503_everywhere,
);

/// A 503 `Service unavailable` with `Retry-After`, in the envelope.
#[track_caller]
fn assert_unavailable(status: u16, body: &Value, retry_after: Option<&str>) {
    assert_error(status, body, 503, "Service unavailable");
    assert!(body["retryAfter"].as_i64().is_some_and(|s| s > 0), "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));
}

async fn rename(app: &TestApp, session: &Session, name: &str) -> (u16, Value, Option<String>) {
    let res = app
        .send_json(
            Method::PATCH,
            "/api/organization",
            &session.token,
            json!({ "name": name }),
        )
        .send()
        .await
        .expect("request");
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null), retry_after)
}

async fn stored_name(app: &TestApp, org_id: &str) -> String {
    sqlx::query_scalar("SELECT name FROM organizations WHERE id = $1")
        .bind(org_id)
        .fetch_one(&app.db)
        .await
        .expect("organization row")
}

/// Holds the write lock on `org_id`'s row (PostgreSQL) or on the whole database (SQLite)
/// from a connection of its own, as an operator's `psql`/`sqlite3` session would.
async fn hold_lock(
    app: &TestApp,
    backend: &Backend,
    org_id: &str,
) -> sqlx::pool::PoolConnection<sqlx::Any> {
    let mut conn = app.db.acquire().await.expect("connection");
    match backend {
        Backend::Sqlite => {
            conn.execute("BEGIN IMMEDIATE").await.expect("begin");
        }
        Backend::Postgres(_) => {
            conn.execute("BEGIN").await.expect("begin");
            sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
                .bind(org_id)
                .fetch_one(&mut *conn)
                .await
                .expect("row lock");
        }
    }
    conn
}

async fn a_held_lock_answers_503_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend.clone(), |c| {
        c.limits.db_statement_timeout = Duration::from_millis(500);
    })
    .await;
    let admin = app.signup("Lock Corp").await;
    let mut holder = hold_lock(&app, &backend, &admin.org_id).await;

    // More writers than the pool has connections: each gives up on the lock, none keeps its
    // connection, and reads go on meanwhile.
    let started = Instant::now();
    let writers = (0..20).map(|i| {
        let (app, admin) = (&app, &admin);
        async move { rename(app, admin, &format!("Blocked {i}")).await }
    });
    for (status, body, retry_after) in futures_util::future::join_all(writers).await {
        assert_unavailable(status, &body, retry_after.as_deref());
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(status, 200);

    holder.execute("ROLLBACK").await.expect("release");
    drop(holder);
    assert_eq!(stored_name(&app, &admin.org_id).await, "Lock Corp");
    let (status, body, _) = rename(&app, &admin, "Unblocked Corp").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_name(&app, &admin.org_id).await, "Unblocked Corp");
}

async fn the_request_deadline_answers_503_and_frees_the_connection(backend: Backend) {
    let app = TestApp::spawn_with(backend.clone(), |c| {
        // The database would wait far longer than the request may.
        c.limits.db_statement_timeout = Duration::from_secs(20);
        c.limits.request_timeout = Duration::from_millis(700);
    })
    .await;
    let admin = app.signup("Deadline Corp").await;
    let mut holder = hold_lock(&app, &backend, &admin.org_id).await;
    let started = Instant::now();
    let (status, body, retry_after) = rename(&app, &admin, "Too Late").await;
    let took = started.elapsed();
    assert_unavailable(status, &body, retry_after.as_deref());
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(5),
        "{took:?}"
    );

    holder.execute("ROLLBACK").await.expect("release");
    drop(holder);
    // The abandoned transaction was rolled back: nothing of it landed, and its connection
    // came back clean (or was replaced), so writes go on.
    for i in 0..20 {
        let (status, body, _) = rename(&app, &admin, &format!("After {i}")).await;
        assert_eq!(status, 200, "write {i}: {body}");
    }
    assert_eq!(stored_name(&app, &admin.org_id).await, "After 19");
    let renames = app
        .audit_actions(&admin.org_id)
        .await
        .iter()
        .filter(|a| *a == "org.settings_updated")
        .count();
    assert_eq!(renames, 20, "the timed-out rename left no audit entry");
}

async fn a_closed_database_answers_503_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Gone Corp").await;
    app.state.db.close().await;
    // (GET /api/organization may still be answered from the SQLite read cache.)
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/organization",
            Some(json!({"name": "X Corp"})),
        ),
        (Method::POST, "/api/projects", Some(json!({"name": "web"}))),
        (Method::GET, "/api/users", None),
        (Method::POST, "/api/executions", Some(json!({}))),
    ] {
        let req = match body {
            Some(body) => app.send_json(method.clone(), path, &admin.token, body),
            None => app.request(method.clone(), path).bearer_auth(&admin.token),
        };
        let res = req.send().await.expect("request");
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_unavailable(status, &body, retry_after.as_deref());
        assert!(
            !body["message"].as_str().unwrap_or("").contains("pool"),
            "{method} {path}: no internal detail in {body}"
        );
    }
    let (status, body) = call(
        app.request(Method::POST, "/api/auth/login")
            .json(&json!({"email": admin.email, "password": crate::helpers::PASSWORD})),
    )
    .await;
    assert_unavailable(status, &body, Some("2"));
}

/// SQLite: the disk fills up (`PRAGMA max_page_count` on every pooled connection), writes
/// fail with 503 and `/health` says so; once there is room again, the very next writes all
/// succeed — no pooled connection was left inside a dead transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_heal_after_the_disk_was_full() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.signup("Full Disk Corp").await;
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&app.db)
        .await
        .expect("page count");
    set_max_pages(app.state.db.connection_pool(), pages).await;

    let mut failed = None;
    for i in 0..400 {
        let long_name = format!("Full Disk Corp {i:04} {}", "x".repeat(80));
        let (status, body, retry_after) = rename(&app, &admin, &long_name).await;
        if status != 200 {
            assert_unavailable(status, &body, retry_after.as_deref());
            failed = Some(i);
            break;
        }
    }
    assert!(failed.is_some(), "the database never filled up");
    let (status, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["database"], json!("down"));

    set_max_pages(app.state.db.connection_pool(), 1 << 30).await;
    for i in 0..50 {
        let (status, body, _) = rename(&app, &admin, &format!("Room Again {i}")).await;
        assert_eq!(
            status, 200,
            "write {i} after the disk had room again: {body}"
        );
        let task = format!("heal-{i}");
        let (status, body) = call(app.send_json(
            Method::POST,
            "/api/executions",
            &admin.token,
            json!({"taskId": task, "status": "RUNNING"}),
        ))
        .await;
        assert_eq!(status, 201, "run {i}: {body}");
        let (status, body) = call(app.send_json(
            Method::PATCH,
            &format!("/api/executions/{task}"),
            &admin.token,
            json!({"status": "PASSED"}),
        ))
        .await;
        assert_eq!(status, 200, "run {i} finished: {body}");
    }
    let (status, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 200, "{body}");
}

/// Sets `max_page_count` on every connection of `pool` (it is a per-connection setting).
async fn set_max_pages(pool: &AnyPool, pages: i64) {
    let max = pool.options().get_max_connections() as usize;
    let mut held = Vec::new();
    for _ in 0..max {
        let mut conn = pool.acquire().await.expect("pooled connection");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PRAGMA max_page_count = {pages}"
        )))
        .await
        .expect("max_page_count");
        held.push(conn);
    }
}

/// A TCP proxy in front of a server, which a test can cut or make silent.
struct Proxy {
    addr: std::net::SocketAddr,
    mode: watch::Sender<Link>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Up,
    /// Connections stay open but nothing is forwarded either way.
    Silent,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, _) = watch::channel(Link::Up);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut link = modes.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let mut up = [0u8; 8192];
                    let mut down = [0u8; 8192];
                    loop {
                        if *link.borrow_and_update() == Link::Silent {
                            // Hold both sockets open, forwarding nothing, until the test ends.
                            std::future::pending::<()>().await;
                        }
                        tokio::select! {
                            n = cr.read(&mut up) => match n {
                                Ok(n) if n > 0 && *link.borrow() == Link::Up => {
                                    if sw.write_all(&up[..n]).await.is_err() { return; }
                                }
                                Ok(n) if n > 0 => {}
                                _ => return,
                            },
                            n = sr.read(&mut down) => match n {
                                Ok(n) if n > 0 && *link.borrow() == Link::Up => {
                                    if cw.write_all(&down[..n]).await.is_err() { return; }
                                }
                                Ok(n) if n > 0 => {}
                                _ => return,
                            },
                            _ = link.changed() => {}
                        }
                    }
                });
            }
        });
        Self { addr, mode }
    }

    fn set(&self, link: Link) {
        self.mode.send_replace(link);
    }
}

/// PostgreSQL behind a link that goes silent mid-service: every request still answers,
/// 503 within its deadline, and the service recovers when the link does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_link_answers_503_within_the_deadline() {
    let Some(Backend::Postgres(base)) = Backend::postgres() else {
        return;
    };
    let target = postgres_addr(&base);
    let proxy = Proxy::start(target).await;
    let proxied = base.replacen(&target.to_string(), &proxy.addr.to_string(), 1);
    assert_ne!(proxied, base, "TEST_DATABASE_URL must name 127.0.0.1:PORT");
    let app = TestApp::spawn_with(Backend::Postgres(proxied), |c| {
        c.limits.request_timeout = Duration::from_millis(1500);
        c.limits.db_acquire_timeout = Duration::from_millis(1000);
        c.limits.db_statement_timeout = Duration::from_secs(5);
    })
    .await;
    let admin = app.signup("Silent Link Corp").await;

    proxy.set(Link::Silent);
    let started = Instant::now();
    let requests = (0..24).map(|i| {
        let (app, admin) = (&app, &admin);
        async move {
            if i % 2 == 0 {
                rename(app, admin, &format!("Silent {i}")).await
            } else {
                let res = app
                    .get("/api/organization", &admin.token)
                    .send()
                    .await
                    .expect("request");
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let status = res.status().as_u16();
                (status, res.json().await.unwrap_or(Value::Null), retry_after)
            }
        }
    });
    for (status, body, retry_after) in futures_util::future::join_all(requests).await {
        assert_unavailable(status, &body, retry_after.as_deref());
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    proxy.set(Link::Up);
    // Connections stuck on the silent link are discarded; fresh ones carry the traffic.
    let recovered = Instant::now();
    loop {
        let (status, body, _) = rename(&app, &admin, "Link Back Corp").await;
        if status == 200 {
            break;
        }
        assert_unavailable(status, &body, Some("2"));
        assert!(
            recovered.elapsed() < Duration::from_secs(20),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..10 {
        let (status, body, _) = rename(&app, &admin, &format!("Back {i}")).await;
        assert_eq!(status, 200, "{body}");
    }
}

fn postgres_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split("://").nth(1).expect("scheme");
    let host_port = rest
        .rsplit('@')
        .next()
        .and_then(|s| s.split('/').next())
        .expect("host");
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("TEST_DATABASE_URL must name an IP address and port")
}

/// A Redis that accepts connections and never answers: requests do not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_requests_nothing() {
    let frozen = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let frozen_url = format!("redis://{}", frozen.local_addr().expect("addr"));
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = frozen.accept().await {
            keep.lock().await.push(socket);
        }
    });
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some(orgd::config::Secret(frozen_url));
    })
    .await;
    let admin = app.signup("Frozen Redis Corp").await;
    // 8 clients for 3 s: long enough for any reconnection schedule to come round.
    let until = Instant::now() + Duration::from_secs(3);
    let clients = (0..8).map(|_| {
        let (app, admin) = (&app, &admin);
        async move {
            let mut took = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let (status, _) = call(app.get("/api/organization", &admin.token)).await;
                took.push(started.elapsed());
                assert!(status == 200 || status == 429, "{status}");
            }
            took
        }
    });
    let mut took: Vec<Duration> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    took.sort();
    let p50 = took[took.len() / 2];
    assert!(took.len() > 500, "{} requests in 3 s", took.len());
    assert!(
        p50 < Duration::from_millis(5),
        "p50 {p50:?} over {} requests",
        took.len()
    );
    let started = Instant::now();
    let (status, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"], json!("down"));
    assert!(started.elapsed() < Duration::from_millis(300));
    // Limits still hold, counted in process.
    let res = app
        .get("/api/organization", &admin.token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 429);
}

/// A Redis that freezes while in use (the link goes silent): after the first call that
/// times out, requests count in process at once; when Redis is back it is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_freezes_in_use_costs_requests_nothing() {
    let Some(redis) = crate::helpers::redis_url() else {
        return;
    };
    let target = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .and_then(|a| a.replace("localhost", "127.0.0.1").parse().ok())
        .expect("TEST_REDIS_URL must be redis://IP:PORT");
    let proxy = Proxy::start(target).await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some(orgd::config::Secret(format!("redis://{}", proxy.addr)));
        c.rate_limit_per_minute = 1_000_000;
    })
    .await;
    let admin = app.signup("Freezing Redis Corp").await;
    let (_, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(body["checks"]["redis"], json!("ok"), "{body}");

    proxy.set(Link::Silent);
    let until = Instant::now() + Duration::from_secs(3);
    let clients = (0..8).map(|_| {
        let (app, admin) = (&app, &admin);
        async move {
            let mut took = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let (status, _) = call(app.get("/api/organization", &admin.token)).await;
                took.push(started.elapsed());
                assert_eq!(status, 200);
            }
            took
        }
    });
    let mut took: Vec<Duration> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    took.sort();
    let p50 = took[took.len() / 2];
    assert!(
        p50 < Duration::from_millis(5),
        "p50 {p50:?} over {} requests",
        took.len()
    );
    assert!(took.len() > 1000, "{} requests in 3 s", took.len());
    let (_, body) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(body["checks"]["redis"], json!("down"), "{body}");

    proxy.set(Link::Up);
    let back = Instant::now();
    loop {
        let (_, body) = call(app.request(Method::GET, "/health")).await;
        if body["checks"]["redis"] == json!("ok") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "Redis never used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Slow and silent clients are closed on time while everyone else is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_shed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.header_read_timeout = Duration::from_millis(400);
        c.limits.idle_timeout = Duration::from_millis(1200);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();

    // Headers a byte at a time: cut 400 ms after the first byte.
    let slow = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let started = Instant::now();
            for byte in b"GET /health HTTP/1.1\r\nHost: orgd\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if started.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            started.elapsed()
        })
    };
    // Silent from the start: cut after the idle timeout.
    let silent = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let started = Instant::now();
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
            started.elapsed()
        })
    };
    // Meanwhile the service answers others.
    for _ in 0..20 {
        let (status, _) = call(app.request(Method::GET, "/health")).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow = slow.await.expect("slow client");
    assert!(
        slow < Duration::from_millis(1500),
        "slow-header client held {slow:?}"
    );
    let silent = silent.await.expect("silent client");
    assert!(
        silent >= Duration::from_millis(1100) && silent < Duration::from_secs(3),
        "silent client held {silent:?}"
    );

    // A keep-alive connection between requests is idle, not slow: it outlives the header
    // timeout and is closed after the idle timeout.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: orgd\r\n\r\n")
        .await
        .expect("request");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: orgd\r\n\r\n")
        .await
        .expect("second request on the same connection");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let mut buf = [0u8; 64];
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection still open"
    );
    assert!(idle_from.elapsed() >= Duration::from_millis(1100));
}

/// One whole HTTP/1.1 response (head and `Content-Length` body) from a kept-alive stream.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut buf).await.expect("response");
        assert!(n > 0, "connection closed mid-response");
        answer.extend_from_slice(&buf[..n]);
    }
}

/// With every connection slot taken, a new client waits in the backlog and is served as
/// soon as one frees up; open connections are a gauge in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_their_turn() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.limits.max_connections = Some(2);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let first = TcpStream::connect(&addr).await.expect("first");
    let second = TcpStream::connect(&addr).await.expect("second");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::new();
    let waiting = tokio::spawn({
        let base = app.base.clone();
        async move {
            let started = Instant::now();
            let res = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("request");
            (started.elapsed(), res.text().await.expect("body"))
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served beyond the cap"
    );
    drop(first);
    let (took, metrics) = waiting.await.expect("third client");
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(
        metrics.contains("orgd_http_open_connections 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("orgd_http_accept_errors_total 0"),
        "{metrics}"
    );
    drop(second);
}

/// With the open-file limit reached, accepts fail: they are logged and counted, and the
/// service serves again as soon as descriptors are free.
#[test]
fn refused_accepts_are_logged_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = std::process::Command::new("sh");
    crate::cli::without_environment(&mut cmd);
    // `ulimit -n` lowers the hard limit too, so orgd cannot raise it back.
    cmd.current_dir(dir.path())
        .env("ORGD_MAX_CONNECTIONS", "1000")
        .args([
            "-c",
            &format!(
                "ulimit -n 96 && exec {} serve --bind 127.0.0.1:0",
                env!("CARGO_BIN_EXE_orgd")
            ),
        ]);
    let running = crate::cli::Running::start(cmd);
    let addr = running.base.trim_start_matches("http://").to_string();
    let held: Vec<_> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let metrics = get_blocking(&addr, "/metrics");
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orgd_http_accept_errors_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("accept errors counter");
    assert!(failed > 0, "{metrics}");
    let (_, logs) = running.terminate();
    assert!(logs.contains("could not accept a connection"), "{logs}");
}

/// A plain HTTP/1.1 GET without a client library's connection pool.
fn get_blocking(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: orgd\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("response");
    answer
}
