//! What must never leave orgd in a text it sends out (an analysis prompt, a Slack message, a
//! webhook payload): every secret the organization stored, opened, and the platform's own
//! AI keys.

use crate::state::AppState;
use orgd_core::models::AiProvider;

pub async fn secrets_to_redact(app: &AppState, org_id: &str) -> anyhow::Result<Vec<String>> {
    let sealed = orgd_core::analysis::organization_secrets(&app.db, org_id).await?;
    let mut secrets = Vec::with_capacity(sealed.len() + AiProvider::ALL.len());
    for s in sealed {
        let opened = app
            .vault
            .open(&s.sealed, &s.table.binding(org_id, &s.provider))?;
        secrets.push(opened.0);
    }
    secrets.extend(
        AiProvider::ALL
            .into_iter()
            .filter_map(|p| app.config.ai.platform_key(p))
            .map(|k| k.0.clone()),
    );
    Ok(secrets)
}
