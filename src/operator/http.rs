//! The operator HTTP API (`/api/admin/...`), e.g. for a billing system. It exists only when
//! `ORGD_ADMIN_TOKEN` is set, and answers only `Authorization: Bearer <ORGD_ADMIN_TOKEN>`.

use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{LimitValue, OperatorError, PlanChange, change_organization, organization_view};
use crate::auth::extract::bearer_credentials;
use crate::error::{ApiError, OrInternal};
use crate::http::{ClientIp, JsonBody, Page, PageQuery, PathParams};
use crate::organization::Plan;
use crate::organization::plan::LIMIT_NAMES;
use crate::organization::usage::{Period, Usage};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/organizations", get(list))
        .route("/api/admin/organizations/{id}/plan", put(set_plan))
        .route("/api/admin/organizations/{id}/limits", put(set_limits))
}

/// Equal secrets, compared in time independent of where they differ: digests of equal
/// length, every byte examined.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A request carrying the operator token.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &app.config.admin_token else {
            return Err(ApiError::RouteNotFound);
        };
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(bearer_credentials)
            .ok_or(ApiError::Unauthenticated(
                "The operator API needs Authorization: Bearer <ORGD_ADMIN_TOKEN>.",
            ))?;
        if same_secret(given, &expected.0) {
            Ok(Self)
        } else {
            Err(ApiError::Unauthenticated(
                "The operator token is not valid.",
            ))
        }
    }
}

fn operator_error(e: OperatorError, error: &'static str) -> ApiError {
    match e {
        OperatorError::NotFound(_) => crate::organization::org_not_found(),
        other => ApiError::internal(error, other),
    }
}

async fn list(
    State(app): State<AppState>,
    _operator: Operator,
    page: PageQuery,
) -> Result<Json<Value>, ApiError> {
    let Page { limit, offset } = page.page_within(50, Page::MAX_LIMIT)?;
    let now = app.now();
    let period = Period::containing(now);
    let (page, total) = app
        .store
        .organizations_usage_page(&period.key, now, limit, offset)
        .await
        .or_internal("Failed to fetch organizations")?;
    let organizations: Vec<Value> = page
        .iter()
        .map(|record| {
            let usage = Usage::new(record, period.clone());
            let mut view = organization_view(&record.org);
            if let Some(obj) = view.as_object_mut() {
                obj.insert("usage".into(), usage.view());
                obj.insert("alerts".into(), json!(usage.alerts()));
            }
            view
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "organizations": organizations,
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

async fn apply(
    app: &AppState,
    ip: ClientIp,
    reference: &str,
    change: &PlanChange,
) -> Result<Json<Value>, ApiError> {
    const FAILED: &str = "Failed to update organization";
    let (_, after) = change_organization(
        app.store.as_ref(),
        reference,
        change,
        Some(ip.0.to_string()),
        app.now(),
    )
    .await
    .map_err(|e| operator_error(e, FAILED))?;
    Ok(Json(
        json!({"success": true, "organization": organization_view(&after)}),
    ))
}

async fn set_plan(
    State(app): State<AppState>,
    ip: ClientIp,
    _operator: Operator,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = body.required()?;
    let plan = body
        .required_str("plan", ApiError::invalid("plan", "plan is required"))
        .and_then(|p| {
            Plan::parse(p)
                .ok_or_else(|| ApiError::invalid("plan", "plan must be free, team or enterprise"))
        })?;
    let reset = body.opt_bool("resetOverrides")?.unwrap_or(false);
    apply(&app, ip, &id, &PlanChange::plan(plan, reset)).await
}

async fn set_limits(
    State(app): State<AppState>,
    ip: ClientIp,
    _operator: Operator,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = body.required()?;
    let mut limits = Vec::new();
    for name in LIMIT_NAMES {
        let Some(raw) = body.0.get(name) else {
            continue;
        };
        let value = LimitValue::from_json(raw).ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("{name} must be a non-negative integer, null (unlimited) or \"default\""),
            )
        })?;
        limits.push((name, value));
    }
    if limits.is_empty() {
        return Err(ApiError::bad_request(
            "Missing fields",
            format!("At least one of {} is required", LIMIT_NAMES.join(", ")),
        ));
    }
    apply(&app, ip, &id, &PlanChange::limits(limits)).await
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret(
            "a-long-operator-token",
            "a-long-operator-token"
        ));
        assert!(!same_secret(
            "a-long-operator-token",
            "a-long-operator-tokeN"
        ));
        assert!(!same_secret("", "a-long-operator-token"));
    }
}
