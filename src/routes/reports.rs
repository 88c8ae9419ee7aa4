//! Report files of an execution: `PUT`/`GET /api/executions/:taskId/reports/{path}` and
//! `GET /api/executions/:taskId/reports`.
//!
//! An upload takes one of `ORGD_MAX_CONCURRENT_UPLOADS` slots (waiting briefly for one),
//! reserves its declared size against the storage limit before any byte lands (one
//! conditional UPDATE), streams the body to the store (a hidden file, or an object of its
//! own), then records and publishes the file in one transaction; the object it replaced is
//! removed after that commit. Any failure — refused, short body, client gone, the store
//! failing (503 `Storage unavailable`) — releases the reservation and leaves no file behind.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use crate::http::Json;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::execution_views::ReportFileView;
use super::execution_views::{TaskIdParam, execution_not_found, task_in_path};
use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::http::PathParams;
use crate::openapi::ErrorBody;
use crate::state::AppState;
use orgd_core::db::Db;
use orgd_core::executions::{NewReport, ReportCommit, Reservation};
use orgd_core::executions::{ReportPath, TaskId};
use orgd_core::reports::{PendingUpload, ReportKey, StorageError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).merge(
        OpenApiRouter::new()
            .routes(routes!(download, upload))
            // The upload counts its bytes itself, against ORGD_MAX_REPORT_FILE_BYTES.
            .layer(DefaultBodyLimit::disable()),
    )
}

#[derive(Serialize, ToSchema)]
pub struct Uploaded {
    success: bool,
    data: UploadedFile,
}

#[derive(Serialize, ToSchema)]
pub struct UploadedFile {
    path: String,
    size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReportList {
    success: bool,
    data: ReportListData,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportListData {
    files: Vec<ReportFileView>,
    total_bytes: i64,
}

const STORE_FAILED: &str = "Failed to store report";

/// How long an upload waits for a slot before it answers 503 `Storage unavailable`.
const UPLOAD_SLOT_WAIT: Duration = Duration::from_secs(5);

fn parse_target(task_id: &str, path: &str) -> Result<(TaskId, ReportPath), ApiError> {
    let task_id = task_in_path(task_id)?;
    let path = ReportPath::parse(path).map_err(|why| ApiError::invalid("path", why))?;
    Ok((task_id, path))
}

fn storage_error(e: StorageError, error: &'static str) -> ApiError {
    match e {
        StorageError::Refused(why) => ApiError::invalid("path", why),
        StorageError::Io(e) => ApiError::internal(error, e),
        StorageError::Unavailable(e) => ApiError::StorageUnavailable(anyhow::anyhow!(e)),
    }
}

/// The declared body size: 411 without `Content-Length`, 413 over the per-file cap.
fn declared_length(headers: &HeaderMap, max: u64) -> Result<u64, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::Refused {
            status: StatusCode::LENGTH_REQUIRED,
            error: "Length required",
            message: "Report uploads need a Content-Length header".into(),
            extra: Map::new(),
        })?;
    if length > max {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(length)
}

/// Bytes counted against the storage limit for an upload in flight. Released on every path
/// that does not record the file — also when the request future is dropped because the
/// client went away.
struct ReservedBytes {
    db: Db,
    org_id: String,
    bytes: i64,
    armed: bool,
}

impl ReservedBytes {
    async fn release(mut self) {
        self.armed = false;
        // Spawned: it completes even if this request is dropped meanwhile.
        let _ = tokio::spawn(release(self.db.clone(), self.org_id.clone(), self.bytes)).await;
    }

    /// The bytes now belong to a recorded file.
    fn keep(mut self) {
        self.armed = false;
    }
}

async fn release(db: Db, org_id: String, bytes: i64) {
    if let Err(e) = orgd_core::executions::release_report_bytes(&db, &org_id, bytes).await {
        tracing::error!(error = %e, org_id, bytes, "could not release reserved report bytes");
    }
}

impl Drop for ReservedBytes {
    fn drop(&mut self) {
        if self.armed
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release(self.db.clone(), self.org_id.clone(), self.bytes));
        }
    }
}

/// Copies exactly `expected` bytes of `body` into `upload`.
/// Reads `body` into `upload`; a body that stops arriving for `stall` counts as cut off
/// (uploads have no request deadline, only this).
async fn receive(
    mut body: Body,
    upload: &mut dyn PendingUpload,
    expected: u64,
    stall: Duration,
) -> Result<(), ApiError> {
    let interrupted = || {
        ApiError::bad_request(
            "Incomplete body",
            "The upload ended before Content-Length bytes arrived",
        )
    };
    let mut received = 0u64;
    while let Some(frame) =
        tokio::time::timeout(stall, poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)))
            .await
            .map_err(|_| interrupted())?
    {
        let Ok(data) = frame.map_err(|_| interrupted())?.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > expected {
            return Err(ApiError::bad_request(
                "Invalid body",
                "The body is longer than its Content-Length",
            ));
        }
        upload
            .write(&data)
            .await
            .map_err(|e| storage_error(e, STORE_FAILED))?;
    }
    if received != expected {
        return Err(interrupted());
    }
    Ok(())
}

#[utoipa::path(
    put,
    path = "/api/executions/{taskId}/reports/{*path}",
    tag = "executions",
    summary = "Store a report file of an execution (admin, developer, API key); raw bytes with a Content-Length",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(
        TaskIdParam,
        ("path" = String, Path, description = "A relative path (`/` separates directories; no `..`, no absolute paths)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes (any type)"),
    responses(
        (status = 200, description = "Replaced a file; storage counts the difference", body = Uploaded),
        (status = 201, description = "Stored", body = Uploaded),
        (status = 400, description = "`Invalid path`", body = ErrorBody),
        (status = 403, description = "`Forbidden` (viewers); `Storage limit exceeded` with `usage`, and nothing is written", body = ErrorBody),
        (status = 404, description = "`Execution not found`", body = ErrorBody),
        (status = 411, description = "`Length required`", body = ErrorBody),
        (status = 413, description = "`Payload too large`: over ORGD_MAX_REPORT_FILE_BYTES", body = ErrorBody),
        (status = 503, description = "`Storage unavailable` (with `Retry-After`): the report storage failed, or every upload slot stayed taken; nothing was stored", body = ErrorBody),
    ),
)]
async fn upload(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams((task_id, path)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    user.require(Role::WRITERS)?;
    let (task_id, path) = parse_target(&task_id, &path)?;
    let size = declared_length(&headers, app.config.max_report_file_bytes)?;
    let bytes = i64::try_from(size).map_err(|_| ApiError::PayloadTooLarge)?;
    let _slot = tokio::time::timeout(UPLOAD_SLOT_WAIT, app.uploads.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::StorageUnavailable(anyhow::anyhow!(
                "every upload slot (ORGD_MAX_CONCURRENT_UPLOADS) stayed taken"
            ))
        })?;
    let org_id = user.org_id();
    let reservation = orgd_core::executions::reserve_report_bytes(
        &app.db,
        org_id,
        task_id.as_str(),
        path.as_str(),
        bytes,
    )
    .await
    .or_internal(STORE_FAILED)?;
    match reservation {
        Reservation::Reserved => {}
        Reservation::ExecutionNotFound => return Err(execution_not_found()),
        Reservation::StorageLimit { used, limit } => {
            return Err(ApiError::Refused {
                status: StatusCode::FORBIDDEN,
                error: "Storage limit exceeded",
                message: format!(
                    "This file ({bytes} bytes) does not fit in your organization's storage ({used} of {limit} bytes used)"
                )
                .into(),
                extra: Map::from_iter([(
                    "usage".into(),
                    json!({"usedBytes": used, "limitBytes": limit, "fileBytes": bytes}),
                )]),
            });
        }
    }
    let reserved = ReservedBytes {
        db: app.db.clone(),
        org_id: org_id.to_string(),
        bytes,
        armed: true,
    };
    let key = ReportKey {
        org_id,
        task_id: &task_id,
        path: &path,
    };
    let received = match receive_file(&app, key, body, size).await {
        Ok(received) => received,
        Err(e) => {
            reserved.release().await;
            return Err(e);
        }
    };
    let answer = Uploaded {
        success: true,
        data: UploadedFile {
            path: path.as_str().to_string(),
            size,
        },
    };
    // All bytes are in: recording runs to its end even if the client goes away now.
    let target = (org_id.to_string(), task_id, path);
    let replaced = tokio::spawn(record_file(app.clone(), target, size, received, reserved))
        .await
        .map_err(|e| ApiError::internal(STORE_FAILED, e))??;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)))
}

/// A completed upload, not yet served: the object it wrote, if the store names them.
struct Received {
    pending: Box<dyn PendingUpload>,
    object: Option<String>,
}

/// Streams the body into a new, not yet visible file of the storage.
async fn receive_file(
    app: &AppState,
    key: ReportKey<'_>,
    body: Body,
    size: u64,
) -> Result<Received, ApiError> {
    let mut pending = app
        .reports
        .put(key)
        .await
        .map_err(|e| storage_error(e, STORE_FAILED))?;
    receive(body, pending.as_mut(), size, app.config.limits.idle_timeout).await?;
    let object = pending
        .complete()
        .await
        .map_err(|e| storage_error(e, STORE_FAILED))?;
    Ok(Received { pending, object })
}

/// Records and publishes the file in one transaction; the reservation becomes the file's
/// bytes, or is released when nothing was recorded. True when it replaced a file, whose
/// object (if any) goes once nothing points to it.
async fn record_file(
    app: AppState,
    (org_id, task_id, path): (String, TaskId, ReportPath),
    size: u64,
    Received { pending, object }: Received,
    reserved: ReservedBytes,
) -> Result<bool, ApiError> {
    let publish = Box::pin(async move { pending.publish().await.map_err(anyhow::Error::from) });
    let file = NewReport {
        org_id: &org_id,
        task_id: task_id.as_str(),
        path: path.as_str(),
        object: object.as_deref(),
        size: size as i64,
    };
    let commit = orgd_core::executions::commit_report(&app.db, file, app.now(), publish).await;
    let replaced = match commit {
        Ok(ReportCommit::Created) => Ok(false),
        Ok(ReportCommit::Replaced { object }) => {
            // A failure leaves a leftover that `orgd usage reconcile` removes.
            if let Some(object) = object
                && let Err(e) = app.reports.remove_object(&object).await
            {
                tracing::warn!(error = %e, object, "could not remove a replaced report");
            }
            Ok(true)
        }
        Ok(ReportCommit::ExecutionGone) => Err(execution_not_found()),
        Ok(ReportCommit::PublishFailed(e)) => Err(ApiError::internal(STORE_FAILED, e)),
        Err(e) => Err(ApiError::internal(STORE_FAILED, e)),
    };
    match replaced {
        Ok(replaced) => {
            reserved.keep();
            Ok(replaced)
        }
        Err(e) => {
            reserved.release().await;
            Err(e)
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/executions/{taskId}/reports/{*path}",
    tag = "executions",
    summary = "A report file's bytes (all roles, API key), typed by extension and sandboxed by CSP",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(
        TaskIdParam,
        ("path" = String, Path, description = "The file's relative path"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = Vec<u8>),
        (status = 400, description = "`Invalid path`", body = ErrorBody),
        (status = 404, description = "`Execution not found`, `Report not found`", body = ErrorBody),
        (status = 503, description = "`Storage unavailable` (with `Retry-After`): the report storage failed before any byte was sent", body = ErrorBody),
    ),
)]
async fn download(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams((task_id, path)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    const FETCH_FAILED: &str = "Failed to fetch report";
    let (task_id, path) = parse_target(&task_id, &path)?;
    let object = orgd_core::executions::report_object(
        &app.db,
        user.org_id(),
        task_id.as_str(),
        path.as_str(),
    )
    .await
    .or_internal(FETCH_FAILED)?
    .ok_or_else(execution_not_found)?;
    let key = ReportKey {
        org_id: user.org_id(),
        task_id: &task_id,
        path: &path,
    };
    let report = app
        .reports
        .get(key, object.as_deref())
        .await
        .map_err(|e| storage_error(e, FETCH_FAILED))?
        .ok_or_else(|| ApiError::not_found("Report not found", "No report file at this path"))?;
    let mut response = axum::body::Body::from_stream(report.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(path.content_type()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(report.size));
    // An uploaded HTML report must never run script with this API's origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/executions/{taskId}/reports",
    tag = "executions",
    summary = "An execution's report files (all roles, API key)",
    security(("bearerAuth" = []), ("apiKey" = [])),
    params(TaskIdParam),
    responses(
        (status = 200, description = "The files", body = ReportList),
        (status = 404, description = "`Execution not found`", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    PathParams(task_id): PathParams<String>,
) -> Result<Json<ReportList>, ApiError> {
    let task_id = task_in_path(&task_id)?;
    let files = orgd_core::executions::report_files(&app.db, user.org_id(), task_id.as_str())
        .await
        .or_internal("Failed to fetch reports")?
        .ok_or_else(execution_not_found)?;
    let total_bytes: i64 = files.iter().map(|f| f.size).sum();
    Ok(Json(ReportList {
        success: true,
        data: ReportListData {
            files: files.iter().map(ReportFileView::from).collect(),
            total_bytes,
        },
    }))
}
