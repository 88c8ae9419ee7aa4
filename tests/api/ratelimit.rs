//! Rate limits: exact sliding windows per organization and per IP, headers, Redis sharing
//! between instances, and degradation to in-process limits when Redis is down.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestApp, assert_error, call, redis_url};

crate::backend_tests!(
    organization_bucket_admits_100_then_429_and_rolls,
    refused_authentication_is_not_counted,
    auth_endpoints_are_limited_per_ip,
    parallel_requests_never_exceed_the_limit,
    two_instances_share_the_limit_through_redis,
    redis_outage_degrades_to_memory_limits,
);

fn header(res: &reqwest::Response, name: &str) -> i64 {
    res.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn organization_bucket_admits_100_then_429_and_rolls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Limited").await;
    let start = orgd_core::clock::Clock::now_ms(&*app.clock);
    for i in 0..100 {
        // Spread over 50 s: the window is rolling, not fixed.
        app.clock.advance(500);
        let path = if i % 2 == 0 {
            "/api/organization"
        } else {
            "/api/auth/me"
        };
        let res = app.get(path, &admin.token).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "request {i}");
        assert_eq!(header(&res, "x-ratelimit-limit"), 100);
        assert_eq!(
            header(&res, "x-ratelimit-remaining"),
            99 - i,
            "counted once per request"
        );
    }
    let res = app
        .get("/api/organization", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    // The first request (at start + 500 ms) leaves the window at start + 60.5 s.
    let now = start + 50_000;
    let expected_wait = (start + 500 + 60_000 - now + 999) / 1000;
    assert_eq!(header(&res, "retry-after"), expected_wait);
    assert_eq!(header(&res, "x-ratelimit-remaining"), 0);
    assert_eq!(
        header(&res, "x-ratelimit-reset"),
        (start + 500 + 60_000 + 999) / 1000
    );
    let (status, body) = crate::helpers::read(res).await;
    assert_error(status, &body, 429, "Too Many Requests");
    assert_eq!(
        body["message"],
        json!("API rate limit exceeded. Please try again in a moment.")
    );
    assert_eq!(body["retryAfter"], json!(expected_wait));
    assert_eq!(body["limit"], json!(100));
    assert_eq!(body["window"], json!(60000));

    // Another organization has its own bucket.
    let other = app.signup("Unlimited Neighbour").await;
    assert_eq!(
        call(app.get("/api/organization", &other.token)).await.0,
        200
    );

    // Exactly when the oldest request leaves the window, one more is admitted — not two.
    app.clock.set(start + 500 + 60_000);
    assert_eq!(
        call(app.get("/api/organization", &admin.token)).await.0,
        200
    );
    assert_eq!(
        call(app.get("/api/organization", &admin.token)).await.0,
        429
    );
    // A whole window later everything is free again.
    app.clock.advance(60_000);
    let res = app
        .get("/api/organization", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(header(&res, "x-ratelimit-remaining"), 99);
}

async fn refused_authentication_is_not_counted(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 3).await;
    let admin = app.signup("Strangers").await;
    for _ in 0..10 {
        let (status, _) = call(app.get("/api/organization", "forged")).await;
        assert_eq!(status, 401);
    }
    let res = app
        .get("/api/organization", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "x-ratelimit-remaining"), 2);
}

async fn auth_endpoints_are_limited_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth_rate_limit_per_minute = 10;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // A different email each time, so the per-account lockout never kicks in.
    let attempt = |ip: &'static str| {
        app.request(Method::POST, "/api/auth/login")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": format!("{}@example.com", orgd_core::ids::random_hex(4)), "password": "Wr0ng!pass"}))
    };
    for _ in 0..10 {
        let res = attempt("192.0.2.1").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401);
        assert_eq!(header(&res, "x-ratelimit-limit"), 10);
    }
    let (status, body) = call(attempt("192.0.2.1")).await;
    assert_error(status, &body, 429, "Too Many Requests");
    assert_eq!(
        body["message"],
        json!("Too many authentication attempts. Please try again in a moment.")
    );
    // Signup shares the bucket.
    let (status, _) = call(
        app.request(Method::POST, "/api/auth/signup")
            .header("x-forwarded-for", "192.0.2.1")
            .json(&json!({"email": "n@example.com", "password": "Str0ng!pass", "name": "N", "organizationName": "NN"})),
    )
    .await;
    assert_eq!(status, 429);
    // Another client IP is not affected.
    assert_eq!(call(attempt("192.0.2.2")).await.0, 401);
}

async fn parallel_requests_never_exceed_the_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.rate_limit_per_minute = 25).await;
    let admin = app.signup("Burst").await;
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let req = app.get("/api/organization", &admin.token);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 25);
}

async fn two_instances_share_the_limit_through_redis(backend: Backend) {
    let Some(redis) = redis_url() else { return };
    let a = TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(orgd::config::Secret(redis));
        c.rate_limit_per_minute = 30;
    })
    .await;
    let b = a.another_instance().await;
    let admin = a.signup("Shared").await;
    let (status, health) = call(a.request(Method::GET, "/health")).await;
    assert_eq!((status, &health["checks"]["redis"]), (200, &json!("ok")));
    let tasks: Vec<_> = (0..80)
        .map(|i| {
            let app = if i % 2 == 0 { &a } else { &b };
            let req = app.get("/api/organization", &admin.token);
            tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 30, "two instances together admit exactly the limit");
    // The shared window rolls too.
    a.clock.advance(60_001);
    assert_eq!(call(b.get("/api/organization", &admin.token)).await.0, 200);
    b.stop().await;
}

async fn redis_outage_degrades_to_memory_limits(backend: Backend) {
    let cache = match backend {
        Backend::Postgres(_) => "ok",
        Backend::Sqlite => "disabled",
    };
    // Nothing listens on port 1: the service must keep serving and keep limiting.
    let app = TestApp::spawn_with(backend, |c| {
        c.redis_url = Some(orgd::config::Secret("redis://127.0.0.1:1".into()));
        c.rate_limit_per_minute = 5;
    })
    .await;
    let admin = app.signup("No Redis").await;
    for _ in 0..5 {
        assert_eq!(
            call(app.get("/api/organization", &admin.token)).await.0,
            200
        );
    }
    assert_eq!(
        call(app.get("/api/organization", &admin.token)).await.0,
        429
    );
    let (status, health) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 200, "a Redis outage does not take the instance out");
    assert_eq!(health["status"], json!("degraded"));
    assert_eq!(
        health["checks"],
        json!({"database": "ok", "redis": "down", "storage": "ok", "cache": cache})
    );
}
