//! Report files: upload, replace, download, list, delete with the execution; the storage
//! limit enforced before bytes land (also in parallel), path confinement, and uploads that
//! fail or are cut off leaving nothing behind.

use std::sync::Arc;
use std::time::Duration;

use orgd::config::ReportsLocation;
use orgd_core::clock::Clock;
use orgd_providers::reports::faults::{Faults, FaultyStore};
use orgd_providers::reports::object_store::memory::InMemory;
use orgd_providers::reports::object_store::path::Path as ObjectPath;
use orgd_providers::reports::object_store::{ObjectStore, ObjectStoreExt};
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::executions::{
    count, files_below, in_parallel, new_execution, org_reports_dir, raw_http, raw_request,
    set_overrides, storage_counter, stored_files, upload,
};
use crate::helpers::{Backend, Storage, TestApp, assert_error, call};

crate::storage_tests!(
    files_are_stored_replaced_listed_and_served,
    uploads_need_a_length_and_respect_the_file_cap,
    the_storage_limit_refuses_before_anything_is_written,
    parallel_uploads_never_pass_the_storage_limit,
    parallel_replacements_of_one_path_keep_counters_exact,
    path_traversal_is_refused_and_writes_nothing,
    an_interrupted_upload_leaves_nothing_behind,
    deleting_an_execution_frees_its_storage,
);

// The local directory's own rule.
crate::backend_tests!(symlinks_are_never_followed);

async fn files_are_stored_replaced_listed_and_served(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Reports").await;
    new_execution(&app, &admin, "run-1").await;
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let (status, body) = upload(&app, &admin, "run-1", "index.html", html.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "data": {"path": "index.html", "size": html.len()}})
    );
    let (status, _) = upload(&app, &admin, "run-1", "data/trace.zip", vec![7u8; 1000]).await;
    assert_eq!(status, 201);
    assert_eq!(
        storage_counter(&app, &admin.org_id).await,
        html.len() as i64 + 1000
    );

    // Replacing answers 200 and counts the difference.
    let (status, body) = upload(&app, &admin, "run-1", "data/trace.zip", vec![8u8; 400]).await;
    assert_eq!(status, 200, "{body}");
    let expected = html.len() as i64 + 400;
    assert_eq!(storage_counter(&app, &admin.org_id).await, expected);
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [
            ("run-1/data/trace.zip".to_string(), 400),
            ("run-1/index.html".to_string(), html.len() as u64)
        ]
    );

    let viewer = app.add_member(&admin.org_id, "viewer").await;
    let (status, body) = call(app.get("/api/executions/run-1/reports", &viewer.token)).await;
    assert_eq!(status, 200, "{body}");
    let files = body["data"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(
        (files[0]["path"].clone(), files[0]["size"].clone()),
        (json!("data/trace.zip"), json!(400))
    );
    assert_eq!(
        (files[1]["path"].clone(), files[1]["size"].clone()),
        (json!("index.html"), json!(html.len()))
    );
    assert!(
        files[0]["updatedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(body["data"]["totalBytes"], json!(expected));

    // Downloads: the bytes, a type from the extension, and a sandbox so HTML cannot run script.
    let res = app
        .get("/api/executions/run-1/reports/index.html", &viewer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(res.headers()["content-security-policy"], "sandbox");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.bytes().await.unwrap().to_vec(), html);
    let res = app
        .get(
            "/api/executions/run-1/reports/data/trace.zip",
            &viewer.token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert_eq!(res.headers()["content-length"], "400");
    assert_eq!(res.bytes().await.unwrap().to_vec(), vec![8u8; 400]);

    let (status, body) =
        call(app.get("/api/executions/run-1/reports/missing.png", &viewer.token)).await;
    assert_error(status, &body, 404, "Report not found");
    let (status, body) = call(app.get("/api/executions/run-1/reports/data", &viewer.token)).await;
    assert_error(status, &body, 404, "Report not found");
    let (status, body) = call(app.get("/api/executions/nope/reports", &viewer.token)).await;
    assert_error(status, &body, 404, "Execution not found");
    let (status, body) = upload(&app, &admin, "nope", "a.txt", b"x".to_vec()).await;
    assert_error(status, &body, 404, "Execution not found");

    // A large file goes through in one piece.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, _) = upload(&app, &admin, "run-1", "video.webm", big.clone()).await;
    assert_eq!(status, 201);
    let res = app
        .get("/api/executions/run-1/reports/video.webm", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "video/webm");
    assert_eq!(res.bytes().await.unwrap().to_vec(), big);
    let (_, org) = call(app.get("/api/organization", &admin.token)).await;
    assert_eq!(
        org["organization"]["limits"]["currentStorageUsedBytes"],
        json!(expected + big.len() as i64)
    );
    let (_, execution) = call(app.get("/api/executions/run-1", &admin.token)).await;
    assert_eq!(
        execution["data"]["execution"]["reportBytes"],
        json!(expected + big.len() as i64)
    );
}

async fn uploads_need_a_length_and_respect_the_file_cap(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |c| c.max_report_file_bytes = 1000).await;
    let admin = app.signup("Caps").await;
    new_execution(&app, &admin, "run").await;
    let (status, body) = upload(&app, &admin, "run", "big.bin", vec![0; 1001]).await;
    assert_error(status, &body, 413, "Payload too large");
    let (status, _) = upload(&app, &admin, "run", "ok.bin", vec![0; 1000]).await;
    assert_eq!(status, 201);

    // Chunked, without Content-Length.
    let chunked = format!(
        "PUT /api/executions/run/reports/chunked.txt HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        admin.token
    );
    let (status, body) = raw_http(&app, chunked.as_bytes()).await;
    assert_error(status, &body, 411, "Length required");
    assert_eq!(storage_counter(&app, &admin.org_id).await, 1000);
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [("run/ok.bin".to_string(), 1000)]
    );
}

async fn the_storage_limit_refuses_before_anything_is_written(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Full").await;
    set_overrides(&app, &admin.org_id, json!({"maxStorageBytes": 1000})).await;
    new_execution(&app, &admin, "run").await;
    assert_eq!(
        upload(&app, &admin, "run", "a.bin", vec![1; 700]).await.0,
        201
    );
    let (status, body) = upload(&app, &admin, "run", "b.bin", vec![1; 301]).await;
    assert_error(status, &body, 403, "Storage limit exceeded");
    assert_eq!(
        body["usage"],
        json!({"usedBytes": 700, "limitBytes": 1000, "fileBytes": 301})
    );
    assert_eq!(storage_counter(&app, &admin.org_id).await, 700);
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [("run/a.bin".to_string(), 700)]
    );

    // Exactly up to the limit is fine; replacing counts as if the old file were gone.
    assert_eq!(
        upload(&app, &admin, "run", "b.bin", vec![1; 300]).await.0,
        201
    );
    assert_eq!(
        upload(&app, &admin, "run", "a.bin", vec![2; 700]).await.0,
        200
    );
    let (status, body) = upload(&app, &admin, "run", "a.bin", vec![2; 701]).await;
    assert_error(status, &body, 403, "Storage limit exceeded");
    assert_eq!(
        upload(&app, &admin, "run", "a.bin", vec![3; 100]).await.0,
        200
    );
    assert_eq!(storage_counter(&app, &admin.org_id).await, 400);
    let on_disk: u64 = stored_files(&app, &admin.org_id)
        .await
        .iter()
        .map(|(_, s)| s)
        .sum();
    assert_eq!(on_disk, 400);
}

async fn parallel_uploads_never_pass_the_storage_limit(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Crowded").await;
    set_overrides(&app, &admin.org_id, json!({"maxStorageBytes": 1000})).await;
    new_execution(&app, &admin, "run").await;
    let statuses = in_parallel(12, |i| {
        app.request(
            Method::PUT,
            &format!("/api/executions/run/reports/part-{i}.bin"),
        )
        .bearer_auth(&admin.token)
        .body(vec![i as u8; 300])
    })
    .await;
    assert_eq!(
        (count(&statuses, 201), count(&statuses, 403)),
        (3, 9),
        "{statuses:?}"
    );
    let files = stored_files(&app, &admin.org_id).await;
    let on_disk: u64 = files.iter().map(|(_, s)| s).sum();
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(on_disk, 900);
    assert_eq!(storage_counter(&app, &admin.org_id).await, 900);
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(
        usage["usage"]["storage"],
        json!({"usedBytes": 900, "limitBytes": 1000})
    );
}

async fn parallel_replacements_of_one_path_keep_counters_exact(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Racing").await;
    new_execution(&app, &admin, "run").await;
    let statuses = in_parallel(10, |i| {
        app.request(Method::PUT, "/api/executions/run/reports/same.bin")
            .bearer_auth(&admin.token)
            .body(vec![i as u8; 100 * (i + 1)])
    })
    .await;
    assert_eq!(
        count(&statuses, 201) + count(&statuses, 200),
        10,
        "{statuses:?}"
    );
    assert_eq!(count(&statuses, 201), 1);
    let files = stored_files(&app, &admin.org_id).await;
    assert_eq!(files.len(), 1, "{files:?}");
    let size = files[0].1 as i64;
    assert_eq!(storage_counter(&app, &admin.org_id).await, size);
    let (_, list) = call(app.get("/api/executions/run/reports", &admin.token)).await;
    assert_eq!(
        list["data"]["files"][0]["size"],
        json!(size),
        "the row describes the file on disk"
    );
    let bytes = app
        .get("/api/executions/run/reports/same.bin", &admin.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len() as i64, size);
    assert!(
        bytes
            .iter()
            .all(|b| usize::from(*b) == size as usize / 100 - 1)
    );
}

async fn path_traversal_is_refused_and_writes_nothing(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Traversal").await;
    new_execution(&app, &admin, "run").await;
    let root = app.test_db.dir.path().to_path_buf();
    let snapshot = || {
        files_below(&root)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("orgd.db"))
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let attempts = [
        "/api/executions/run/reports/../../../escape.txt",
        "/api/executions/run/reports/a/../../../../escape.txt",
        "/api/executions/run/reports/%2e%2e/%2e%2e/%2e%2e/escape.txt",
        "/api/executions/run/reports/..%2f..%2f..%2fescape.txt",
        "/api/executions/run/reports/%2fetc%2fescape.txt",
        "/api/executions/run/reports//tmp/escape.txt",
        "/api/executions/run/reports/a%5c..%5c..%5cescape.txt",
        "/api/executions/run/reports/a%00.txt",
        "/api/executions/run/reports/a//b.txt",
        "/api/executions/run/reports/./escape.txt",
        "/api/executions/run/reports/.orgd-upload-0000",
    ];
    for target in attempts {
        for method in ["PUT", "GET"] {
            let (status, body) =
                raw_http(&app, &raw_request(method, target, &admin.token, b"pwned")).await;
            assert_error(status, &body, 400, "Invalid path");
        }
    }
    // The taskId is a directory name too.
    for target in [
        "/api/executions/../reports/escape.txt",
        "/api/executions/%2e%2e/reports/escape.txt",
        "/api/executions/./reports/escape.txt",
    ] {
        for method in ["PUT", "GET"] {
            let (status, _) =
                raw_http(&app, &raw_request(method, target, &admin.token, b"pwned")).await;
            assert_eq!(status, 404, "{method} {target}");
        }
    }
    assert_eq!(snapshot(), before, "nothing was written anywhere");
    assert_eq!(storage_counter(&app, &admin.org_id).await, 0);
}

async fn symlinks_are_never_followed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.signup("Links").await;
    new_execution(&app, &admin, "run").await;
    new_execution_after_finish(&app, &admin, "run", "other").await;
    assert_eq!(
        upload(&app, &admin, "run", "index.html", b"ok".to_vec())
            .await
            .0,
        201
    );
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"top secret").unwrap();
    let org_dir = org_reports_dir(&app, &admin.org_id);
    std::os::unix::fs::symlink(outside.path(), org_dir.join("run/escape")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        org_dir.join("run/secret.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), org_dir.join("other")).unwrap();

    for (task, path) in [
        ("run", "escape/pwned.txt"),
        ("run", "escape/secret.txt"),
        ("other", "pwned.txt"),
    ] {
        let (status, body) = upload(&app, &admin, task, path, b"pwned".to_vec()).await;
        assert_error(status, &body, 400, "Invalid path");
    }
    for (task, path) in [
        ("run", "escape/secret.txt"),
        ("run", "secret.txt"),
        ("other", "secret.txt"),
    ] {
        let (status, body) = call(app.get(
            &format!("/api/executions/{task}/reports/{path}"),
            &admin.token,
        ))
        .await;
        assert_error(status, &body, 400, "Invalid path");
    }
    assert_eq!(
        files_below(outside.path()),
        [("secret.txt".to_string(), 10)]
    );
    assert_eq!(
        std::fs::read(outside.path().join("secret.txt")).unwrap(),
        b"top secret"
    );
    assert_eq!(storage_counter(&app, &admin.org_id).await, 2);

    // Deleting an execution whose directory is a symlink removes the link, not the target.
    call(
        app.request(Method::DELETE, "/api/executions/other")
            .bearer_auth(&admin.token),
    )
    .await;
    assert!(!org_dir.join("other").exists());
    assert_eq!(
        files_below(outside.path()),
        [("secret.txt".to_string(), 10)]
    );
}

/// Finishes `running` (free plan: one run at a time) and starts `task_id`.
async fn new_execution_after_finish(
    app: &TestApp,
    session: &crate::helpers::Session,
    running: &str,
    task_id: &str,
) {
    crate::executions::finish(app, session, running).await;
    new_execution(app, session, task_id).await;
}

async fn an_interrupted_upload_leaves_nothing_behind(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Cut off").await;
    new_execution(&app, &admin, "run").await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /api/executions/run/reports/partial.bin HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        admin.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[9u8; 5000]).await.unwrap();
    stream.flush().await.unwrap();
    // The declared bytes are reserved while the body is arriving...
    wait_for(|| async { storage_counter(&app, &admin.org_id).await == 100_000 }).await;
    drop(stream);
    // ...and released, with the partial file removed, once the client is gone.
    wait_for(|| async { storage_counter(&app, &admin.org_id).await == 0 }).await;
    wait_for(|| async { stored_files(&app, &admin.org_id).await.is_empty() }).await;
    let (_, list) = call(app.get("/api/executions/run/reports", &admin.token)).await;
    assert_eq!(list["data"], json!({"files": [], "totalBytes": 0}));

    // A body shorter than its Content-Length on a half-closed connection is refused too.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /api/executions/run/reports/short.bin HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Length: 10\r\n\r\nabc",
        admin.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response).await;
    wait_for(|| async { storage_counter(&app, &admin.org_id).await == 0 }).await;
    assert!(stored_files(&app, &admin.org_id).await.is_empty());
}

async fn wait_for<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached within 5 s");
}

async fn deleting_an_execution_frees_its_storage(backend: Backend, storage: Storage) {
    let app = TestApp::spawn_on(backend, &storage, |_| {}).await;
    let admin = app.signup("Cleanup").await;
    set_overrides(&app, &admin.org_id, json!({"maxConcurrentRuns": null})).await;
    new_execution(&app, &admin, "keep").await;
    new_execution(&app, &admin, "drop").await;
    upload(&app, &admin, "keep", "a.txt", vec![1; 100]).await;
    upload(&app, &admin, "drop", "a.txt", vec![1; 250]).await;
    upload(&app, &admin, "drop", "deep/b.txt", vec![1; 50]).await;
    assert_eq!(storage_counter(&app, &admin.org_id).await, 400);
    let (status, _) = call(
        app.request(Method::DELETE, "/api/executions/drop")
            .bearer_auth(&admin.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(storage_counter(&app, &admin.org_id).await, 100);
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [("keep/a.txt".to_string(), 100)]
    );
    let (status, body) = call(app.get("/api/executions/drop/reports/a.txt", &admin.token)).await;
    assert_error(status, &body, 404, "Execution not found");
    let (_, usage) = call(app.get("/api/organization/usage", &admin.token)).await;
    assert_eq!(usage["usage"]["storage"]["usedBytes"], json!(100));
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM report_files WHERE organization_id = $1")
            .bind(&admin.org_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

/// An instance whose reports live in an in-memory store that fails on demand.
async fn on_a_faulty_store(backend: Backend) -> (TestApp, Faults) {
    let inner = Arc::new(InMemory::new());
    let (store, faults) = FaultyStore::new(inner);
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let app = TestApp::spawn_with(backend, |c| {
        c.reports = ReportsLocation::Store {
            store,
            prefix: "reports".into(),
        }
    })
    .await;
    (app, faults)
}

fn assert_storage_unavailable(status: u16, body: &serde_json::Value) {
    assert_error(status, body, 503, "Storage unavailable");
    assert_eq!(body["retryAfter"], json!(2), "{body}");
}

crate::backend_tests!(
    a_failing_store_answers_503_and_keeps_nothing,
    reconcile_removes_objects_no_file_points_to,
);

async fn a_failing_store_answers_503_and_keeps_nothing(backend: Backend) {
    let (app, faults) = on_a_faulty_store(backend).await;
    let admin = app.signup("Flaky").await;
    new_execution(&app, &admin, "run").await;
    assert_eq!(
        upload(&app, &admin, "run", "kept.txt", b"kept".to_vec())
            .await
            .0,
        201
    );

    // A small file (one PUT) and a large one (multipart: start, three parts, then the
    // completion fails).
    faults.fail_after(0);
    let res = app
        .request(Method::PUT, "/api/executions/run/reports/small.txt")
        .bearer_auth(&admin.token)
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "2");
    let (status, body) = crate::helpers::read(res).await;
    assert_storage_unavailable(status, &body);
    faults.fail_after(4);
    let (status, body) = upload(&app, &admin, "run", "big.bin", vec![2u8; 12 << 20]).await;
    assert_storage_unavailable(status, &body);
    // Replacing a file fails the same way, and the file stays as it was.
    faults.fail_after(0);
    let (status, body) = upload(&app, &admin, "run", "kept.txt", b"other".to_vec()).await;
    assert_storage_unavailable(status, &body);

    // The reservations were released and no object was left behind.
    wait_for(|| async { stored_files(&app, &admin.org_id).await.len() == 1 }).await;
    assert_eq!(storage_counter(&app, &admin.org_id).await, 4);
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [("run/kept.txt".to_string(), 4)]
    );

    // A download whose store fails answers 503 before any byte.
    let (status, body) = call(app.get("/api/executions/run/reports/kept.txt", &admin.token)).await;
    assert_storage_unavailable(status, &body);
    // /health shows it, without taking the instance out of the load balancer.
    let (status, health) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["checks"]["storage"], "down", "{health}");

    faults.heal();
    let (_, health) = call(app.request(Method::GET, "/health")).await;
    assert_eq!(health["checks"]["storage"], "ok", "{health}");
    let (status, _) = upload(&app, &admin, "run", "big.bin", vec![3u8; 12 << 20]).await;
    assert_eq!(status, 201);
    let res = app
        .get("/api/executions/run/reports/big.bin", &admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-length"], (12 << 20).to_string());
    assert!(res.bytes().await.unwrap().iter().all(|b| *b == 3));
    assert_eq!(
        storage_counter(&app, &admin.org_id).await,
        4 + (12 << 20) as i64
    );
}

async fn reconcile_removes_objects_no_file_points_to(backend: Backend) {
    let (app, _) = on_a_faulty_store(backend).await;
    let admin = app.signup("Leftovers").await;
    new_execution(&app, &admin, "run").await;
    upload(&app, &admin, "run", "a.txt", vec![1; 10]).await;
    upload(&app, &admin, "run", "b.txt", vec![1; 20]).await;
    let ReportsLocation::Store { store, .. } = &app.config.reports else {
        unreachable!()
    };
    // A crash between storing an object and recording it; and a row whose object is gone.
    let leftover = ObjectPath::from(format!(
        "reports/{}/run/0123456789abcdef01234567",
        admin.org_id
    ));
    store.put(&leftover, vec![9u8; 50].into()).await.unwrap();
    let object: String = sqlx::query_scalar(
        "SELECT object_key FROM report_files WHERE organization_id = $1 AND path = 'b.txt'",
    )
    .bind(&admin.org_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    store
        .delete(&ObjectPath::from(format!("reports/{object}")))
        .await
        .unwrap();

    let (db, reports, org) = (
        &app.state.db,
        app.state.reports.as_ref(),
        admin.org_id.as_str(),
    );
    let reconcile = |now: i64| async move {
        orgd_core::operator::reconcile(db, reports, Some(org), now)
            .await
            .unwrap()
            .remove(0)
    };
    // A fresh object may be an upload about to be recorded: it stays.
    let fix = reconcile(app.clock.now_ms()).await;
    assert_eq!(fix.leftovers_removed, 0);
    assert_eq!((fix.storage.removed, fix.storage.after), (1, 10), "{fix}");
    assert_eq!(stored_files(&app, &admin.org_id).await.len(), 2);
    // An old one is a leftover.
    let fix = reconcile(app.clock.now_ms() + 11 * 60 * 1000).await;
    assert_eq!(fix.leftovers_removed, 1, "{fix}");
    assert_eq!(
        stored_files(&app, &admin.org_id).await,
        [("run/a.txt".to_string(), 10)]
    );
    assert_eq!(storage_counter(&app, &admin.org_id).await, 10);
    let (_, list) = call(app.get("/api/executions/run/reports", &admin.token)).await;
    assert_eq!(list["data"]["totalBytes"], json!(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_slots_wait_then_answer_503() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.max_concurrent_uploads = 1).await;
    let admin = app.signup("Busy").await;
    new_execution(&app, &admin, "run").await;
    // One upload holds the only slot while its body trickles in.
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /api/executions/run/reports/slow.bin HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Length: 10\r\n\r\nabc",
        admin.token
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    wait_for(|| async { storage_counter(&app, &admin.org_id).await == 10 }).await;
    let started = std::time::Instant::now();
    let (status, body) = upload(&app, &admin, "run", "other.bin", vec![1; 10]).await;
    assert_storage_unavailable(status, &body);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waited for a slot first"
    );
    assert_eq!(
        storage_counter(&app, &admin.org_id).await,
        10,
        "nothing reserved"
    );
    // The slot is back once the first upload ends.
    slow.write_all(b"defghij").await.unwrap();
    let mut answer = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 201");
    let (status, _) = upload(&app, &admin, "run", "other.bin", vec![1; 10]).await;
    assert_eq!(status, 201);
}
