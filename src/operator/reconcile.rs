//! `orgd usage reconcile [<org>]`: re-derives the usage counters from their source of truth
//! — test runs from the executions table, storage from the files on disk (the only place
//! that walks the reports directory) — fixes any drift and says what it changed.
//!
//! Uploads in flight while it runs hold reserved bytes that it cannot see; run it when the
//! organization is quiet, or run it again.

use std::fmt;

use super::OperatorError;
use super::store::{CounterFix, StorageFix};
use crate::executions::storage::ReportStorage;
use crate::store::Store;

/// What reconciling one organization found and fixed.
#[derive(Debug)]
pub struct Reconciliation {
    pub org_id: String,
    pub slug: String,
    pub test_runs: Vec<CounterFix>,
    pub storage: StorageFix,
    /// Entries on disk that are not report files (symlinks, uploads in progress, odd names).
    pub skipped: Vec<String>,
}

impl Reconciliation {
    pub fn drifted(&self) -> bool {
        !self.test_runs.is_empty()
            || self.storage.before != self.storage.after
            || self.files_changed()
    }

    fn files_changed(&self) -> bool {
        self.storage.added + self.storage.removed + self.storage.resized > 0
    }
}

impl fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = format!("{} ({})", self.slug, self.org_id);
        if !self.drifted() {
            writeln!(f, "{who}: no drift")?;
        }
        for fix in &self.test_runs {
            writeln!(
                f,
                "{who}: test runs {}: {} -> {}",
                fix.period, fix.before, fix.after
            )?;
        }
        let s = &self.storage;
        if s.before != s.after || self.files_changed() {
            writeln!(
                f,
                "{who}: storage {} -> {} bytes ({} file(s) added, {} removed, {} resized)",
                s.before, s.after, s.added, s.removed, s.resized
            )?;
        }
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "{who}: skipped {} entry(ies) that are not report files: {}",
                self.skipped.len(),
                self.skipped.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Reconciles the organization whose id or slug is `reference`, or every organization.
pub async fn reconcile(
    store: &dyn Store,
    reports: &dyn ReportStorage,
    reference: Option<&str>,
    now: i64,
) -> Result<Vec<Reconciliation>, OperatorError> {
    let organizations = match reference {
        Some(reference) => {
            let org = store
                .find_organization(reference)
                .await?
                .ok_or_else(|| OperatorError::NotFound(reference.to_string()))?;
            vec![(org.id, org.slug)]
        }
        None => store.organization_slugs().await?,
    };
    let mut results = Vec::with_capacity(organizations.len());
    for (org_id, slug) in organizations {
        let test_runs = store.reconcile_test_runs(&org_id).await?;
        let listing = reports.list(&org_id).await?;
        let storage = store
            .reconcile_storage(&org_id, &listing.files, now)
            .await?;
        results.push(Reconciliation {
            org_id,
            slug,
            test_runs,
            storage,
            skipped: listing.skipped,
        });
    }
    Ok(results)
}
