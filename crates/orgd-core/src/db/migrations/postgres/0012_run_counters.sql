-- Counters kept with the runs (rules::run_stats), so the KPIs and the grouped view cost the
-- same for any history. Changed in the transactions that create, finish and delete runs;
-- `orgd usage reconcile` re-derives them from the executions table.

-- Per organization and UTC month of creation ('YYYY-MM'), live (not deleted) runs only.
CREATE TABLE run_stats (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    total_runs BIGINT NOT NULL DEFAULT 0,
    finished_runs BIGINT NOT NULL DEFAULT 0,
    passed_runs BIGINT NOT NULL DEFAULT 0,
    -- Over finished runs: finished_at - COALESCE(started_at, created_at).
    duration_sum_ms BIGINT NOT NULL DEFAULT 0,
    duration_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, period)
);

-- Per organization and group ('' for runs without a group), live runs only; a group with no
-- live run has no row.
CREATE TABLE run_groups (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    group_key TEXT NOT NULL,
    total_runs BIGINT NOT NULL,
    passed_runs BIGINT NOT NULL,
    -- The newest start time (COALESCE(started_at, created_at)) of its live runs.
    last_run_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, group_key)
);
CREATE INDEX run_groups_recent_idx ON run_groups (organization_id, last_run_at);

-- The existing runs, counted as rules::run_stats::RunFacts counts one.
INSERT INTO run_stats (organization_id, period, total_runs, finished_runs, passed_runs, duration_sum_ms, duration_count)
SELECT organization_id, to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM'),
       COUNT(*),
       SUM(CASE WHEN status IN ('PENDING', 'RUNNING') THEN 0 ELSE 1 END),
       SUM(CASE WHEN status = 'PASSED' THEN 1 ELSE 0 END),
       SUM(CASE WHEN finished_at IS NULL THEN 0 ELSE finished_at - COALESCE(started_at, created_at) END),
       SUM(CASE WHEN finished_at IS NULL THEN 0 ELSE 1 END)
FROM executions
WHERE deleted_at IS NULL
GROUP BY organization_id, to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM');

INSERT INTO run_groups (organization_id, group_key, total_runs, passed_runs, last_run_at)
SELECT organization_id, COALESCE(group_name, ''),
       COUNT(*),
       SUM(CASE WHEN status = 'PASSED' THEN 1 ELSE 0 END),
       MAX(COALESCE(started_at, created_at))
FROM executions
WHERE deleted_at IS NULL
GROUP BY organization_id, COALESCE(group_name, '');
