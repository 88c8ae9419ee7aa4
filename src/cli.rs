//! What `orgd org ...` and `orgd usage reconcile` do and print; `main.rs` only parses.

use anyhow::{Context, bail};

use orgd_core::db::Db;
use orgd_core::operator::{LimitValue, PlanChange, change_organization, limit_name, reconcile};
use orgd_core::organizations;
use orgd_core::plans::{LIMIT_NAMES, Plan};
use orgd_core::reports::ReportStorage;
use orgd_core::usage::{Period, Usage};

fn show(value: Option<i64>) -> String {
    value.map_or_else(|| "unlimited".into(), |v| v.to_string())
}

/// `orgd org list`: every organization with its plan, this month's usage and overrides.
pub async fn org_list(db: &Db, now: i64) -> anyhow::Result<String> {
    const PAGE: i64 = 500;
    let period = Period::containing(now);
    let mut out = format!(
        "{:<24}  {:<24}  {:<10}  {:>15}  {:>13}  {:>27}  OVERRIDES\n",
        "ID", "SLUG", "PLAN", "TEST RUNS", "USERS", "STORAGE BYTES"
    );
    let mut offset = 0;
    loop {
        let (page, _) = organizations::usage_page(db, &period.key, now, PAGE, offset).await?;
        for record in &page {
            let usage = Usage::new(record, period.clone());
            let limits = usage.limits;
            out.push_str(&format!(
                "{:<24}  {:<24}  {:<10}  {:>15}  {:>13}  {:>27}  {}\n",
                record.org.id,
                record.org.slug,
                record.org.plan.as_str(),
                format!("{}/{}", usage.test_runs, show(limits.max_test_runs)),
                format!("{}/{}", usage.active_users, show(limits.max_users)),
                format!("{}/{}", usage.storage_bytes, show(limits.max_storage_bytes)),
                record.org.overrides.to_json(),
            ));
        }
        if (page.len() as i64) < PAGE {
            break;
        }
        offset += PAGE;
    }
    Ok(out)
}

/// `orgd org set-plan <org> <plan> [--reset-overrides]`.
pub async fn set_plan(
    db: &Db,
    org: &str,
    plan: &str,
    reset_overrides: bool,
    now: i64,
) -> anyhow::Result<String> {
    let plan = Plan::parse(plan)
        .with_context(|| format!("unknown plan {plan:?} (free, team or enterprise)"))?;
    let (before, after) =
        change_organization(db, org, &PlanChange::plan(plan, reset_overrides), None, now).await?;
    Ok(format!(
        "{} ({}): plan {} -> {}, overrides {}\n",
        after.slug,
        after.id,
        before.plan.as_str(),
        after.plan.as_str(),
        after.overrides.to_json()
    ))
}

/// `orgd org set-limit <org> <limit> <value|unlimited|default>`.
pub async fn set_limit(
    db: &Db,
    org: &str,
    limit: &str,
    value: &str,
    now: i64,
) -> anyhow::Result<String> {
    let Some(name) = limit_name(limit) else {
        bail!(
            "unknown limit {limit:?} (one of {})",
            LIMIT_NAMES.join(", ")
        );
    };
    let Some(value) = LimitValue::parse_word(value) else {
        bail!("invalid value {value:?}: a non-negative integer, unlimited or default");
    };
    let (before, after) =
        change_organization(db, org, &PlanChange::limits(vec![(name, value)]), None, now).await?;
    Ok(format!(
        "{} ({}): {name} {} -> {}\n",
        after.slug,
        after.id,
        show(before.limits().by_name(name)),
        show(after.limits().by_name(name))
    ))
}

/// `orgd usage reconcile [<org>]`.
pub async fn usage_reconcile(
    db: &Db,
    reports: &dyn ReportStorage,
    org: Option<&str>,
    now: i64,
) -> anyhow::Result<String> {
    let results = reconcile(db, reports, org, now).await?;
    let drifted = results.iter().filter(|r| r.drifted()).count();
    let mut out: String = results.iter().map(ToString::to_string).collect();
    out.push_str(&format!(
        "{} organization(s) checked, {drifted} fixed\n",
        results.len()
    ));
    Ok(out)
}
