//! The binary itself: zero-config start, generated secrets, production refusal, `migrate`,
//! JSON logs without secrets, and graceful shutdown with a request in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_orgd");
const PASSWORD: &str = crate::helpers::PASSWORD;

/// `orgd` with none of the configuration of the environment running the tests.
pub(crate) fn orgd(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    without_environment(&mut cmd);
    cmd
}

/// Removes the variables of the environment running the tests from `cmd`.
pub(crate) fn without_environment(cmd: &mut Command) {
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "ENCRYPTION_KEY",
        "ENCRYPTION_KEYS_OLD",
        "ORGD_ENV",
        "ORGD_BIND",
        "ORGD_DATA_DIR",
        "ORGD_LOG_FORMAT",
        "RUST_LOG",
        "ORGD_ADMIN_TOKEN",
        "ORGD_PUBLIC_URL",
        "ORGD_PROVIDER_TIMEOUT",
        "ORGD_MODEL_CATALOG",
        "LINEAR_API_URL",
        "MONDAY_API_URL",
        "MONDAY_API_VERSION",
        "ORGD_REPORTS_URL",
        "ORGD_MAX_CONCURRENT_UPLOADS",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "AWS_ALLOW_HTTP",
    ] {
        cmd.env_remove(var);
    }
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) base: String,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub(crate) fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orgd");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err_pipe.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("stdout");
        let base = line
            .trim()
            .strip_prefix("orgd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}: {}", stderr.lock().unwrap()))
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Self {
            child,
            base,
            stderr,
        }
    }

    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(100));
        let logs = self.stderr.lock().unwrap().clone();
        (status, logs)
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("orgd did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) async fn signup(base: &str, email: &str) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": email, "password": PASSWORD, "name": "Zero Config", "organizationName": "Fresh Machine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    res.json().await.unwrap()
}

#[tokio::test]
async fn zero_config_start_generates_and_reuses_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let first = Running::start(orgd(dir.path()));
    let body = signup(&first.base, "zero@example.com").await;
    let token = body["token"].as_str().unwrap().to_string();
    let (status, _) = first.terminate();
    assert!(status.success(), "{status}");

    let data = dir.path().join("data");
    assert!(data.join("orgd.db").exists());
    assert!(data.join("reports").is_dir());
    let mut secrets = Vec::new();
    for name in ["jwt_secret", "encryption_key"] {
        let path = data.join(name);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(
            mode & 0o777,
            0o600,
            "{name} must be readable by its owner only"
        );
        let secret = std::fs::read_to_string(&path).unwrap();
        assert_eq!(secret.len(), 64);
        secrets.push(secret);
    }

    // The next start reuses them: the token issued before the restart still works.
    let second = Running::start(orgd(dir.path()));
    let res = reqwest::Client::new()
        .get(format!("{}/api/organization", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    second.terminate();
    assert_eq!(
        std::fs::read_to_string(data.join("jwt_secret")).unwrap(),
        secrets[0]
    );
}

fn refusal(cmd: &mut Command) -> String {
    let out = cmd
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn production_and_shared_databases_refuse_generated_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let err = refusal(orgd(dir.path()).env("ORGD_ENV", "production"));
    assert!(err.contains("JWT_SECRET is required"), "{err}");
    let err = refusal(
        orgd(dir.path())
            .env("ORGD_ENV", "production")
            .env("JWT_SECRET", "j".repeat(40)),
    );
    assert!(err.contains("ENCRYPTION_KEY is required"), "{err}");
    let err = refusal(orgd(dir.path()).env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"));
    assert!(err.contains("JWT_SECRET is required"), "{err}");
    let err = refusal(
        orgd(dir.path())
            .env("JWT_SECRET", "short")
            .env("ENCRYPTION_KEY", "ab".repeat(32)),
    );
    assert!(err.contains("at least 32 bytes"), "{err}");
    let err = refusal(
        orgd(dir.path())
            .env("JWT_SECRET", "j".repeat(40))
            .env("ENCRYPTION_KEY", "nothex"),
    );
    assert!(err.contains("64 hex characters"), "{err}");
    assert!(
        !dir.path().join("data").join("jwt_secret").exists(),
        "nothing generated in production"
    );
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = orgd(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/orgd.db").exists());
    let again = orgd(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success(), "migrations are idempotent");
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let jwt_secret = format!("jwt-{}", orgd_core::ids::random_hex(20));
    let encryption_key = orgd_core::ids::random_hex(32);
    let mut cmd = orgd(dir.path());
    cmd.env("ORGD_LOG_FORMAT", "json")
        .env("JWT_SECRET", &jwt_secret)
        .env("ENCRYPTION_KEY", &encryption_key);
    let running = Running::start(cmd);
    let body = signup(&running.base, "logs@example.com").await;
    let token = body["token"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/api/organization", running.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    client
        .post(format!("{}/api/auth/login", running.base))
        .json(&json!({"email": "logs@example.com", "password": "Wr0ng!pass-typed"}))
        .send()
        .await
        .unwrap();
    let (status, logs) = running.terminate();
    assert!(status.success());
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["request_id"] == json!(request_id)
                && l["fields"]["status"] == json!(200)),
        "no log line for request {request_id}: {logs}"
    );
    for secret in [
        jwt_secret.as_str(),
        encryption_key.as_str(),
        token.as_str(),
        PASSWORD,
        "Wr0ng!pass-typed",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(orgd(dir.path()));
    let addr = running.base.trim_start_matches("http://").to_string();
    let body = r#"{"email":"late@example.com","password":"Str0ng!pass","name":"Late","organizationName":"Late Org"}"#;
    let (head, tail) = body.split_at(20);
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /api/auth/signup HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The request is in flight (headers in, body half sent) when the signal arrives.
    let pid = running.child.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(tail.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request not completed: {response:?}"
    );
    let mut running = running;
    let status = wait_with_timeout(&mut running.child, Duration::from_secs(15));
    assert!(status.success(), "{status}");
    // New connections are refused once it has stopped.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn an_unreachable_report_storage_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = refusal(
        orgd(dir.path())
            .env("ORGD_REPORTS_URL", "s3://reports/orgd")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test"),
    );
    assert!(err.contains("ORGD_REPORTS_URL"), "{err}");
    let err = refusal(orgd(dir.path()).env("ORGD_REPORTS_URL", "ftp://reports"));
    assert!(err.contains("ORGD_REPORTS_URL"), "{err}");
}

/// The binary configured as a deployment is: `ORGD_REPORTS_URL=s3://bucket/prefix` and the
/// standard `AWS_*` variables (a missing bucket stops the start; an existing one serves).
#[tokio::test]
async fn reports_go_to_the_s3_bucket_named_by_the_environment() {
    let Some(endpoint) = std::env::var("TEST_S3_URL").ok().filter(|u| !u.is_empty()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = |cmd: &mut Command, url: &str| {
        cmd.env("ORGD_REPORTS_URL", url)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
    };
    let mut cmd = orgd(dir.path());
    s3(&mut cmd, "s3://orgd-no-such-bucket/x");
    let err = refusal(&mut cmd);
    assert!(err.contains("ORGD_REPORTS_URL"), "{err}");

    let bucket = format!("orgd-cli-{}", orgd_core::ids::random_hex(4));
    reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("TEST_S3_URL must be reachable");
    let mut cmd = orgd(dir.path());
    s3(&mut cmd, &format!("s3://{bucket}/deploy"));
    let running = Running::start(cmd);
    let body = signup(&running.base, "s3@example.com").await;
    let token = body["token"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/api/executions", running.base))
        .bearer_auth(&token)
        .json(&json!({"taskId": "run"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let report = format!("{}/api/executions/run/reports/index.html", running.base);
    let res = client
        .put(&report)
        .bearer_auth(&token)
        .body("<p>ok</p>")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let res = client
        .get(&report)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.text().await.unwrap(), "<p>ok</p>");
    let health: Value = client
        .get(format!("{}/health", running.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["storage"], "ok", "{health}");
    // The object is in the bucket below the prefix, not on disk.
    let listing = client
        .get(format!("{endpoint}/{bucket}?list-type=2&prefix=deploy/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("<Key>deploy/"), "{listing}");
    assert!(!dir.path().join("data").join("reports").exists());
    running.terminate();
}
