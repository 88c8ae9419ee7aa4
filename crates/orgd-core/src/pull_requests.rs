//! Pull-request comments (API.md, "Tickets and pull-request comments on every tracker"): the
//! CI context a run is reported with, and the one comment orgd keeps per (organization,
//! provider, repository, pull request, group).
//!
//! The comment's row is claimed before anything is posted, with one conditional statement, so
//! two runs finishing together post one comment and the second edits it; a run older than the
//! one shown never overwrites it. The service posts and edits (it owns the HTTP clients).

use serde::{Deserialize, Serialize};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row};

use crate::db::Db;
use crate::error::CoreResult;
use crate::integrations::Integration;

/// The trackers that take pull-request comments.
pub const CI_PROVIDERS: [Integration; 4] = [
    Integration::Github,
    Integration::Gitlab,
    Integration::AzureDevops,
    Integration::Bitbucket,
];

/// Where a run came from: the pull (merge) request its comment goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ci {
    /// `github`, `gitlab`, `azuredevops` or `bitbucket`.
    pub provider: String,
    pub pull_request: u64,
    /// In the provider's form (`repository_form`); `None`: the integration's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_url: Option<String>,
}

impl Ci {
    pub fn integration(&self) -> Option<Integration> {
        Integration::parse(&self.provider).filter(|p| CI_PROVIDERS.contains(p))
    }

    /// As stored in `executions.ci`.
    pub fn to_column(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored `executions.ci`; a value that no longer reads is no CI context.
    pub fn from_column(column: Option<&str>) -> Option<Self> {
        column.and_then(|c| serde_json::from_str(c).ok())
    }
}

/// Whether `repository` is in `provider`'s form: GitHub `owner/name`, Bitbucket
/// `workspace/slug`, GitLab a numeric id or a `group/sub/project` path, Azure DevOps a
/// repository name or id.
pub fn repository_form(provider: Integration, repository: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let segment = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(name_char);
    let pair = |max: usize| {
        repository.len() <= max
            && matches!(repository.split('/').collect::<Vec<_>>().as_slice(), [a, b] if segment(a) && segment(b))
    };
    match provider {
        Integration::Github => pair(140),
        Integration::Bitbucket => pair(200),
        Integration::Gitlab => {
            repository.len() <= 255
                && (repository.bytes().all(|b| b.is_ascii_digit()) && repository != "0"
                    || repository.split('/').count() >= 2 && repository.split('/').all(segment))
        }
        Integration::AzureDevops => {
            (1..=64).contains(&repository.chars().count())
                && repository
                    .chars()
                    .all(|c| !c.is_control() && !"\\/:*?\"<>|;#$%{}+=[]&'".contains(c))
                && !repository.starts_with('.')
                && !repository.ends_with('.')
        }
        _ => false,
    }
}

/// The key of one comment. Repository names compare case-insensitively on every provider.
#[derive(Debug, Clone)]
pub struct CommentKey<'a> {
    pub organization_id: &'a str,
    pub provider: Integration,
    pub repository: &'a str,
    pub pull_request: u64,
    /// The run's group; `None` is the `default` group.
    pub group_name: Option<&'a str>,
}

impl CommentKey<'_> {
    /// `query` with the key bound to `$1`–`$5` (the order of `KEY`).
    fn bind<'q>(&self, query: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments> {
        query
            .bind(self.organization_id.to_string())
            .bind(self.provider.as_str())
            .bind(self.repository.to_lowercase())
            .bind(i64::try_from(self.pull_request).unwrap_or(i64::MAX))
            .bind(self.group_name.unwrap_or("").to_string())
    }
}

/// The comment as posted: its id on the provider, and Azure DevOps' thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostedComment {
    pub comment_id: u64,
    pub thread_id: Option<u64>,
}

/// What the claimant may do with the comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No comment yet: post one.
    Post,
    /// Edit this one (post anew if it was deleted).
    Edit(PostedComment),
    /// A run that finished later is shown: nothing to do.
    Superseded,
    /// Another delivery holds the comment until this instant: try again then.
    Busy { until: i64 },
}

const KEY: &str = "organization_id = $1 AND provider = $2 AND repository = $3 AND pull_request = $4 AND group_key = $5";

/// Claims the comment for `owner` (an outbox row) until `until`, for a run that finished at
/// `finished_at`. A claim of the same owner is taken again (its lease expired and it was
/// re-delivered).
pub async fn claim(
    db: &Db,
    key: &CommentKey<'_>,
    owner: &str,
    finished_at: i64,
    until: i64,
    now: i64,
) -> CoreResult<Claim> {
    let mut tx = db.begin_write().await?;
    let inserted = key
        .bind(sqlx::query(
        "INSERT INTO pr_comments (organization_id, provider, repository, pull_request, group_key,
                                  comment_id, thread_id, shown_execution_id, shown_finished_at,
                                  claimed_by, claim_until, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL, NULL, $6, $7, $8, $8)
         ON CONFLICT (organization_id, provider, repository, pull_request, group_key) DO NOTHING",
    ))
    .bind(owner)
    .bind(until)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(Claim::Post);
    }
    let sql = format!(
        "UPDATE pr_comments SET claimed_by = $6, claim_until = $7, updated_at = $8
         WHERE {KEY} AND (claimed_by IS NULL OR claimed_by = $6 OR claim_until < $8)
           AND (shown_finished_at IS NULL OR shown_finished_at <= $9)"
    );
    let taken = key
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(finished_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    let sql = format!(
        "SELECT comment_id, thread_id, shown_finished_at, claim_until FROM pr_comments WHERE {KEY}"
    );
    let row = key
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .fetch_one(&mut *tx)
        .await?;
    let comment_id: Option<i64> = row.try_get("comment_id")?;
    let thread_id: Option<i64> = row.try_get("thread_id")?;
    let shown: Option<i64> = row.try_get("shown_finished_at")?;
    let claim_until: Option<i64> = row.try_get("claim_until")?;
    tx.commit().await?;
    Ok(match (taken, comment_id) {
        (true, None) => Claim::Post,
        (true, Some(id)) => Claim::Edit(PostedComment {
            comment_id: u64::try_from(id).unwrap_or_default(),
            thread_id: thread_id.and_then(|t| u64::try_from(t).ok()),
        }),
        (false, _) if shown.is_some_and(|shown| shown > finished_at) => Claim::Superseded,
        (false, _) => Claim::Busy {
            until: claim_until.unwrap_or(now),
        },
    })
}

/// The claimant posted or edited the comment for the run `execution_id`: it is shown now,
/// and the claim is let go. False when the claim had been taken over meanwhile.
pub async fn shown(
    db: &Db,
    key: &CommentKey<'_>,
    owner: &str,
    comment: PostedComment,
    execution_id: &str,
    finished_at: i64,
    now: i64,
) -> CoreResult<bool> {
    let sql = format!(
        "UPDATE pr_comments SET comment_id = $7, thread_id = $8, shown_execution_id = $9,
            shown_finished_at = $10, claimed_by = NULL, claim_until = NULL, updated_at = $11
         WHERE {KEY} AND claimed_by = $6"
    );
    let updated = key
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(owner)
        .bind(i64::try_from(comment.comment_id).unwrap_or(i64::MAX))
        .bind(comment.thread_id.and_then(|t| i64::try_from(t).ok()))
        .bind(execution_id)
        .bind(finished_at)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// The claimant failed: the comment is free for the next delivery.
pub async fn let_go(db: &Db, key: &CommentKey<'_>, owner: &str, now: i64) -> CoreResult<()> {
    let sql = format!(
        "UPDATE pr_comments SET claimed_by = NULL, claim_until = NULL, updated_at = $7
         WHERE {KEY} AND claimed_by = $6"
    );
    key.bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(owner)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{NOW, databases, organization};

    fn key<'a>(org: &'a str, group: Option<&'a str>) -> CommentKey<'a> {
        CommentKey {
            organization_id: org,
            provider: Integration::Github,
            repository: "Acme/Web",
            pull_request: 42,
            group_name: group,
        }
    }

    #[test]
    fn repository_forms() {
        use Integration::*;
        assert!(repository_form(Github, "acme/web.app"));
        for bad in ["acme", "acme/web/x", "/web", "acme/..", "acme/w b", ""] {
            assert!(!repository_form(Github, bad), "{bad}");
        }
        assert!(repository_form(Bitbucket, "team/repo-1"));
        assert!(repository_form(Gitlab, "42"));
        assert!(repository_form(Gitlab, "group/sub/project"));
        assert!(!repository_form(Gitlab, "0"));
        assert!(!repository_form(Gitlab, "project"));
        assert!(!repository_form(Gitlab, "group//project"));
        assert!(repository_form(AzureDevops, "Web App"));
        assert!(repository_form(
            AzureDevops,
            "6f4e0a2c-1b7d-4c1e-9a3f-0c2b5d8e7f10"
        ));
        assert!(!repository_form(AzureDevops, "a/b"));
        assert!(!repository_form(AzureDevops, &"x".repeat(65)));
        assert!(!repository_form(Jira, "acme/web"));
    }

    #[test]
    fn stored_context_round_trips() {
        let ci = Ci {
            provider: "gitlab".into(),
            pull_request: 7,
            repository: Some("g/p".into()),
            commit_sha: None,
            build_url: None,
        };
        assert_eq!(Ci::from_column(Some(&ci.to_column())), Some(ci.clone()));
        assert_eq!(ci.integration(), Some(Integration::Gitlab));
        assert_eq!(Ci::from_column(Some("not json")), None);
    }

    #[tokio::test]
    async fn one_comment_edited_by_later_runs_only() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let k = key(&org, None);
            assert_eq!(
                claim(db, &k, "a", 100, NOW + 60_000, NOW).await.unwrap(),
                Claim::Post
            );
            // Held by `a` until it posts.
            assert_eq!(
                claim(db, &k, "b", 200, NOW + 60_000, NOW).await.unwrap(),
                Claim::Busy {
                    until: NOW + 60_000
                }
            );
            let posted = PostedComment {
                comment_id: 9,
                thread_id: None,
            };
            assert!(shown(db, &k, "a", posted, "e1", 100, NOW).await.unwrap());
            // Same repository in other case: the same comment.
            let upper = CommentKey {
                repository: "ACME/WEB",
                ..k.clone()
            };
            assert_eq!(
                claim(db, &upper, "b", 200, NOW + 60_000, NOW)
                    .await
                    .unwrap(),
                Claim::Edit(posted)
            );
            assert!(
                shown(db, &upper, "b", posted, "e2", 200, NOW)
                    .await
                    .unwrap()
            );
            // An older run never overwrites the newer one shown.
            assert_eq!(
                claim(db, &k, "c", 150, NOW + 60_000, NOW).await.unwrap(),
                Claim::Superseded
            );
            // Another group is another comment.
            assert_eq!(
                claim(db, &key(&org, Some("nightly")), "d", 150, NOW + 60_000, NOW)
                    .await
                    .unwrap(),
                Claim::Post
            );
            // A failed claimant lets go; an expired claim is taken over.
            assert_eq!(
                claim(db, &k, "e", 300, NOW + 10, NOW).await.unwrap(),
                Claim::Edit(posted)
            );
            let_go(db, &k, "e", NOW).await.unwrap();
            assert_eq!(
                claim(db, &k, "f", 300, NOW + 10, NOW).await.unwrap(),
                Claim::Edit(posted)
            );
            assert_eq!(
                claim(db, &k, "g", 300, NOW + 60_000, NOW + 11)
                    .await
                    .unwrap(),
                Claim::Edit(posted)
            );
            assert!(!shown(db, &k, "f", posted, "e3", 300, NOW).await.unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn runs_finishing_together_post_one_comment() {
        for test in databases().await {
            let db = &test.db;
            let org = organization(db, "free", "{}").await;
            let tasks: Vec<_> = (0..8)
                .map(|n| {
                    let (db, org) = (db.clone(), org.clone());
                    tokio::spawn(async move {
                        claim(
                            &db,
                            &key(&org, None),
                            &format!("row{n}"),
                            100 + n,
                            NOW + 60_000,
                            NOW,
                        )
                        .await
                        .expect("claim")
                    })
                })
                .collect();
            let mut posts = 0;
            for task in tasks {
                let claim = task.await.expect("task");
                posts += usize::from(claim == Claim::Post);
                assert!(
                    matches!(claim, Claim::Post | Claim::Busy { .. }),
                    "{claim:?}"
                );
            }
            assert_eq!(posts, 1);
        }
    }
}
