//! Billing, as far as orgd has it (API.md, "Compatibility with the original's clients"):
//! the plan table with its prices (`ORGD_PLAN_PRICES`) and the organization's subscription —
//! its plan over the usage period. Plans are changed by the operator (`orgd org set-plan`,
//! `PUT /api/admin/organizations/{id}/plan`), so checkout, the billing portal and
//! cancellation answer 501 `Billing not configured`.

use crate::http::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Map;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Role};
use crate::error::{ApiError, OrInternal};
use crate::openapi::ErrorBody;
use crate::routes::organization::org_not_found;
use crate::state::AppState;
use crate::timestamp::Timestamp;
use orgd_core::plans::Plan;
use orgd_core::usage::Period;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(plans))
        .routes(routes!(subscription))
        .routes(routes!(checkout))
        .routes(routes!(portal))
        .routes(routes!(cancel))
}

#[derive(Serialize, ToSchema)]
pub struct PlansResponse {
    success: bool,
    plans: Vec<PlanView>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Plan)]
pub struct PlanView {
    /// `free`, `team` or `enterprise`.
    id: &'static str,
    name: &'static str,
    /// Per month, in whole currency units (`ORGD_PLAN_PRICES`).
    price: u64,
    /// Always `month`.
    interval: &'static str,
    features: PlanFeatures,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanFeatures {
    max_test_runs: PlanLimit,
    max_projects: PlanLimit,
    max_users: PlanLimit,
    max_concurrent_runs: PlanLimit,
    ai_analysis: bool,
    /// `community`, `email` or `priority`.
    support: &'static str,
    sso: bool,
    audit_logs: bool,
}

/// A plan's limit: a number, or the word `Unlimited`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PlanLimit {
    Count(i64),
    Unlimited(Unlimited),
}

#[derive(Serialize, ToSchema)]
pub enum Unlimited {
    Unlimited,
}

impl From<Option<i64>> for PlanLimit {
    fn from(limit: Option<i64>) -> Self {
        limit.map_or(Self::Unlimited(Unlimited::Unlimited), Self::Count)
    }
}

#[utoipa::path(
    get,
    path = "/api/billing/plans",
    tag = "billing",
    summary = "The plans, their limits and prices (public, not rate limited)",
    responses((status = 200, description = "Every plan", body = PlansResponse)),
)]
async fn plans(State(app): State<AppState>) -> Json<PlansResponse> {
    let plans = Plan::ALL
        .into_iter()
        .map(|plan| {
            let limits = plan.defaults();
            PlanView {
                id: plan.as_str(),
                name: plan.display_name(),
                price: app.config.plan_prices.of(plan),
                interval: "month",
                features: PlanFeatures {
                    max_test_runs: limits.max_test_runs.into(),
                    max_projects: limits.max_projects.into(),
                    max_users: limits.max_users.into(),
                    max_concurrent_runs: limits.max_concurrent_runs.into(),
                    // Every plan has AI analysis and the audit log; none has SSO.
                    ai_analysis: true,
                    support: plan.support(),
                    sso: false,
                    audit_logs: true,
                },
            }
        })
        .collect();
    Json(PlansResponse {
        success: true,
        plans,
    })
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionResponse {
    success: bool,
    subscription: SubscriptionView,
}

/// The organization's plan over the current usage period (the UTC month).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Subscription)]
pub struct SubscriptionView {
    #[schema(pattern = "^(free|team|enterprise)$")]
    plan: &'static str,
    plan_name: &'static str,
    price: u64,
    /// Always `active`: a plan is held until the operator changes it.
    status: &'static str,
    current_period_start: Timestamp,
    current_period_end: Timestamp,
    /// Always false: nothing is cancelled through orgd.
    cancel_at_period_end: bool,
    /// Always null: orgd sends no bills.
    next_billing_date: Option<Timestamp>,
}

#[utoipa::path(
    get,
    path = "/api/billing/subscription",
    tag = "billing",
    summary = "The organization's plan and period (admin)",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionResponse),
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
    ),
)]
async fn subscription(
    State(app): State<AppState>,
    user: CurrentUser,
) -> Result<Json<SubscriptionResponse>, ApiError> {
    user.require(Role::ADMIN)?;
    let org = app
        .orgs
        .get(&app.db, user.org_id())
        .await
        .or_internal("Failed to fetch subscription")?
        .ok_or_else(org_not_found)?;
    let period = Period::containing(app.now());
    Ok(Json(SubscriptionResponse {
        success: true,
        subscription: SubscriptionView {
            plan: org.plan.as_str(),
            plan_name: org.plan.display_name(),
            price: app.config.plan_prices.of(org.plan),
            status: "active",
            current_period_start: Timestamp(period.start_ms),
            current_period_end: Timestamp(period.end_ms),
            cancel_at_period_end: false,
            next_billing_date: None,
        },
    }))
}

/// 501 for what a billing provider would do: plans are the operator's.
fn not_configured() -> ApiError {
    ApiError::Refused {
        status: StatusCode::NOT_IMPLEMENTED,
        error: "Billing not configured",
        message: "orgd takes no payments: plans are changed by the operator (orgd org set-plan, or PUT /api/admin/organizations/{id}/plan)".into(),
        extra: Map::new(),
    }
}

#[utoipa::path(
    post,
    path = "/api/billing/checkout",
    tag = "billing",
    summary = "Start a checkout (admin): not available, plans are changed by the operator",
    security(("bearerAuth" = [])),
    responses(
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 501, description = "`Billing not configured`", body = ErrorBody),
    ),
)]
async fn checkout(user: CurrentUser) -> Result<Json<()>, ApiError> {
    user.require(Role::ADMIN)?;
    Err(not_configured())
}

#[utoipa::path(
    get,
    path = "/api/billing/portal",
    tag = "billing",
    summary = "Open the billing portal (admin): not available, plans are changed by the operator",
    security(("bearerAuth" = [])),
    responses(
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 501, description = "`Billing not configured`", body = ErrorBody),
    ),
)]
async fn portal(user: CurrentUser) -> Result<Json<()>, ApiError> {
    user.require(Role::ADMIN)?;
    Err(not_configured())
}

#[utoipa::path(
    post,
    path = "/api/billing/cancel",
    tag = "billing",
    summary = "Cancel the subscription (admin): not available, plans are changed by the operator",
    security(("bearerAuth" = [])),
    responses(
        (status = 403, description = "`Forbidden`: admins only", body = ErrorBody),
        (status = 501, description = "`Billing not configured`", body = ErrorBody),
    ),
)]
async fn cancel(user: CurrentUser) -> Result<Json<()>, ApiError> {
    user.require(Role::ADMIN)?;
    Err(not_configured())
}
