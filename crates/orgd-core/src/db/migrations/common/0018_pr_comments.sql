-- The CI context a run was reported with (JSON: provider, pullRequest, repository?, commitSha?, buildUrl?).
ALTER TABLE executions ADD COLUMN ci TEXT;

-- The one comment orgd keeps per (organization, provider, repository, pull request, group):
-- claimed by one delivery at a time, and showing the latest finished run.
CREATE TABLE pr_comments (
    organization_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    repository TEXT NOT NULL,
    pull_request BIGINT NOT NULL,
    group_key TEXT NOT NULL,
    comment_id BIGINT,
    thread_id BIGINT,
    shown_execution_id TEXT,
    shown_finished_at BIGINT,
    claimed_by TEXT,
    claim_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, provider, repository, pull_request, group_key)
);
