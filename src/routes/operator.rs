//! The operator HTTP API (`/api/admin/...`), e.g. for a billing system. It exists only when
//! `ORGD_ADMIN_TOKEN` is set, and answers only `Authorization: Bearer <ORGD_ADMIN_TOKEN>`.

use crate::http::Json;
use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::extract::bearer_credentials;
use crate::error::{ApiError, OrInternal};
use crate::http::page::PageParams;
use crate::http::{ClientIp, FromBody, JsonBody, Object, Page, PageQuery, PathParams};
use crate::openapi::ErrorBody;
use crate::routes::organization::{LimitsView, limits_view};
use crate::routes::usage::{AlertView, UsageView, alert_views, usage_view};
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::operator::{LimitValue, OperatorError, PlanChange, change_organization};
use orgd_core::organizations::{self, OrganizationRecord};
use orgd_core::plans::LIMIT_NAMES;
use orgd_core::plans::Plan;
use orgd_core::usage::{Period, Usage};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set_plan))
        .routes(routes!(set_limits))
}

/// An organization as the operator sees it: plan, effective limits and the overrides that
/// differ from the plan's.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorOrganization {
    id: String,
    name: String,
    slug: String,
    #[schema(pattern = "^(free|team|enterprise)$")]
    plan: &'static str,
    limits: LimitsView,
    /// Limit name → number, or `null` for unlimited.
    overrides: BTreeMap<String, Option<i64>>,
    created_at: Timestamp,
    /// In the list only: this period's usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageView>,
    /// In the list only.
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<Vec<AlertView>>,
}

impl OperatorOrganization {
    fn new(org: &OrganizationRecord) -> Self {
        Self {
            id: org.id.clone(),
            name: org.name.clone(),
            slug: org.slug.clone(),
            plan: org.plan.as_str(),
            limits: limits_view(org),
            overrides: org.overrides.0.clone(),
            created_at: Timestamp(org.created_at),
            usage: None,
            alerts: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OperatorOrganizationList {
    success: bool,
    organizations: Vec<OperatorOrganization>,
    total: i64,
    limit: i64,
    offset: i64,
}

#[derive(Serialize, ToSchema)]
pub struct OperatorOrganizationChanged {
    success: bool,
    organization: OperatorOrganization,
}

#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanRequest {
    #[schema(value_type = String, pattern = "^(free|team|enterprise)$")]
    plan: Plan,
    /// Drop every limit override too (default: keep them).
    #[schema(value_type = Option<bool>)]
    reset_overrides: bool,
}

impl FromBody for PlanRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let plan = body
            .required_str("plan", ApiError::invalid("plan", "plan is required"))
            .and_then(|p| {
                Plan::parse(p).ok_or_else(|| {
                    ApiError::invalid("plan", "plan must be free, team or enterprise")
                })
            })?;
        Ok(Self {
            plan,
            reset_overrides: body.opt_bool("resetOverrides")?.unwrap_or(false),
        })
    }
}

/// Each limit: a non-negative integer, `null` for unlimited, or `"default"` to drop the
/// override. At least one.
#[derive(Default, ToSchema)]
#[schema(as = LimitsRequest)]
pub struct LimitsRequest {
    #[schema(rename = "maxTestRuns", value_type = Option<serde_json::Value>)]
    max_test_runs: Option<LimitValue>,
    #[schema(rename = "maxUsers", value_type = Option<serde_json::Value>)]
    max_users: Option<LimitValue>,
    #[schema(rename = "maxProjects", value_type = Option<serde_json::Value>)]
    max_projects: Option<LimitValue>,
    #[schema(rename = "maxConcurrentRuns", value_type = Option<serde_json::Value>)]
    max_concurrent_runs: Option<LimitValue>,
    #[schema(rename = "maxStorageBytes", value_type = Option<serde_json::Value>)]
    max_storage_bytes: Option<LimitValue>,
}

impl LimitsRequest {
    /// Each field under its name, in `LIMIT_NAMES` order: the order they are checked in and
    /// handed to the core.
    fn fields(&mut self) -> [(&'static str, &mut Option<LimitValue>); 5] {
        [
            ("maxTestRuns", &mut self.max_test_runs),
            ("maxUsers", &mut self.max_users),
            ("maxStorageBytes", &mut self.max_storage_bytes),
            ("maxProjects", &mut self.max_projects),
            ("maxConcurrentRuns", &mut self.max_concurrent_runs),
        ]
    }

    /// The limits given, in `LIMIT_NAMES` order.
    fn into_changes(mut self) -> Vec<(&'static str, LimitValue)> {
        self.fields()
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
            .collect()
    }
}

impl FromBody for LimitsRequest {
    fn from_body(body: &Object) -> Result<Self, ApiError> {
        let mut request = Self::default();
        for (name, field) in request.fields() {
            let Some(raw) = body.0.get(name) else {
                continue;
            };
            *field = Some(LimitValue::from_json(raw).ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!(
                        "{name} must be a non-negative integer, null (unlimited) or \"default\""
                    ),
                )
            })?);
        }
        if request.fields().iter().all(|(_, value)| value.is_none()) {
            return Err(ApiError::bad_request(
                "Missing fields",
                format!("At least one of {} is required", LIMIT_NAMES.join(", ")),
            ));
        }
        Ok(request)
    }
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
        OperatorError::NotFound(_) => crate::routes::organization::org_not_found(),
        other => ApiError::internal(error, other),
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/organizations",
    tag = "operator",
    summary = "Every organization with its plan, limits, overrides and this period's usage; `limit` 1–500, default 50",
    security(("adminToken" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of organizations", body = OperatorOrganizationList),
        (status = 400, description = "`Invalid limit`, `Invalid offset`, `Invalid query`", body = ErrorBody),
        (status = 404, description = "`Not found`: ORGD_ADMIN_TOKEN is not set", body = ErrorBody),
    ),
)]
async fn list(
    State(app): State<AppState>,
    _operator: Operator,
    page: PageQuery,
) -> Result<Json<OperatorOrganizationList>, ApiError> {
    let Page { limit, offset } = page.page_within(50, Page::MAX_LIMIT)?;
    let now = app.now();
    let period = Period::containing(now);
    let (page, total) = organizations::usage_page(&app.db, &period.key, now, limit, offset)
        .await
        .or_internal("Failed to fetch organizations")?;
    let organizations = page
        .iter()
        .map(|record| {
            let usage = Usage::new(record, period.clone());
            OperatorOrganization {
                usage: Some(usage_view(&usage)),
                alerts: Some(alert_views(&usage)),
                ..OperatorOrganization::new(&record.org)
            }
        })
        .collect();
    Ok(Json(OperatorOrganizationList {
        success: true,
        organizations,
        total,
        limit,
        offset,
    }))
}

async fn apply(
    app: &AppState,
    ip: ClientIp,
    reference: &str,
    change: &PlanChange,
) -> Result<Json<OperatorOrganizationChanged>, ApiError> {
    const FAILED: &str = "Failed to update organization";
    let (_, after) = change_organization(
        &app.db,
        reference,
        change,
        Some(ip.0.to_string()),
        app.now(),
    )
    .await
    .map_err(|e| operator_error(e, FAILED))?;
    Ok(Json(OperatorOrganizationChanged {
        success: true,
        organization: OperatorOrganization::new(&after),
    }))
}

#[utoipa::path(
    put,
    path = "/api/admin/organizations/{id}/plan",
    tag = "operator",
    summary = "Move an organization to a plan; audited with `actor: operator`",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The organization's id or slug")),
    request_body = PlanRequest,
    responses(
        (status = 200, description = "Changed", body = OperatorOrganizationChanged),
        (status = 400, description = "`Invalid plan`, `Invalid resetOverrides`, `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 404, description = "`Organization not found`; `Not found` when ORGD_ADMIN_TOKEN is not set", body = ErrorBody),
    ),
)]
async fn set_plan(
    State(app): State<AppState>,
    ip: ClientIp,
    _operator: Operator,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<OperatorOrganizationChanged>, ApiError> {
    let PlanRequest {
        plan,
        reset_overrides,
    } = body.parse()?;
    apply(&app, ip, &id, &PlanChange::plan(plan, reset_overrides)).await
}

#[utoipa::path(
    put,
    path = "/api/admin/organizations/{id}/limits",
    tag = "operator",
    summary = "Override an organization's limits; audited with `actor: operator`",
    security(("adminToken" = [])),
    params(("id" = String, Path, description = "The organization's id or slug")),
    request_body = LimitsRequest,
    responses(
        (status = 200, description = "Changed", body = OperatorOrganizationChanged),
        (status = 400, description = "`Missing fields`, `Invalid <limit>`, `Missing body`, `Invalid JSON`", body = ErrorBody),
        (status = 404, description = "`Organization not found`; `Not found` when ORGD_ADMIN_TOKEN is not set", body = ErrorBody),
    ),
)]
async fn set_limits(
    State(app): State<AppState>,
    ip: ClientIp,
    _operator: Operator,
    PathParams(id): PathParams<String>,
    body: JsonBody,
) -> Result<Json<OperatorOrganizationChanged>, ApiError> {
    let limits: LimitsRequest = body.parse()?;
    apply(&app, ip, &id, &PlanChange::limits(limits.into_changes())).await
}

#[cfg(test)]
mod tests {
    use super::{LIMIT_NAMES, LimitsRequest, same_secret};

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

    #[test]
    fn limits_are_read_in_the_cores_order() {
        let names = LimitsRequest::default().fields().map(|(name, _)| name);
        assert_eq!(names, LIMIT_NAMES);
    }
}
