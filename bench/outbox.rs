//! The outbox burst (example `bench-outbox`): an orgd on a fresh SQLite file (or
//! `BENCH_DATABASE_URL`), a loopback webhook receiver, 10,000 events queued in one
//! transaction; measures how long the burst takes to drain to the receiver while clients keep
//! calling `GET /api/organization`, and that call's latency percentiles meanwhile.
//!
//! `cargo run --release --example bench-outbox` (knobs: `BENCH_EVENTS`, `BENCH_READERS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use serde_json::{Map, json};

use orgd::{AppState, Config};
use orgd_core::outbox::{MEMBER_JOINED, NewEvent};
use orgd_providers::ssrf::PrivateAddresses;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = knob("BENCH_EVENTS", 10_000);
    let readers = knob("BENCH_READERS", 4);
    let dir = tempfile::tempdir()?;
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.path().join("orgd.db").display()));
    let backend = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };

    // The receiver: counts deliveries, answers 200 at once.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let receiver = Router::new().route(
        "/hook",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let mut config = Config::development(dir.path().join("data"), url)?;
    config.delivery.private_urls = PrivateAddresses::Allowed;
    config.rate_limit_per_minute = 1_000_000;
    config.auth_rate_limit_per_minute = 1_000;
    let state = AppState::build(config, None).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = state.clone();
    tokio::spawn(async move { orgd::serve(server, listener, std::future::pending()).await });

    let client = reqwest::Client::new();
    let signup: serde_json::Value = client
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": "bench@example.com", "password": "Str0ng!pass", "name": "Bench", "organizationName": "Bench Org"}))
        .send()
        .await?
        .json()
        .await?;
    let token = signup["token"].as_str().unwrap_or_default().to_string();
    let org = signup["user"]["organizationId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let created = client
        .post(format!("{base}/api/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": hook, "events": ["*"]}))
        .send()
        .await?;
    anyhow::ensure!(
        created.status() == 201,
        "webhook: {}",
        created.text().await?
    );

    // Readers: GET /api/organization in a loop, each on its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..readers {
        let (client, base, token, stop) = (
            reqwest::Client::new(),
            base.clone(),
            token.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = client
                    .get(format!("{base}/api/organization"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The burst: every event in one transaction, as one change that causes many would.
    let queued = Instant::now();
    let mut tx = state.db.begin_write().await?;
    for n in 0..events {
        let mut data = Map::new();
        data.insert(
            "member".into(),
            json!({"id": n, "name": "Bench", "email": "b@example.com", "role": "developer"}),
        );
        let event = NewEvent {
            organization_id: &org,
            kind: MEMBER_JOINED,
            data,
            analysis_wait_until: None,
        };
        orgd_core::outbox::enqueue(&mut tx, &event, state.now()).await?;
    }
    tx.commit().await?;
    let enqueue_time = queued.elapsed();
    state.wake_outbox();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = queued.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await?);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("backend: {backend}; {events} events; {readers} readers of GET /api/organization");
    println!(
        "queued in one transaction: {:.2} s",
        enqueue_time.as_secs_f64()
    );
    println!(
        "drained to the receiver: {} of {events} in {:.2} s (from the start of queueing)",
        received.load(Ordering::Relaxed),
        drained.as_secs_f64()
    );
    println!(
        "GET /api/organization during the drain: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
