CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (organization_id, slug)
);

CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Unique within an organization, deleted executions included.
    task_id TEXT NOT NULL,
    project_id TEXT,
    -- PENDING | RUNNING | PASSED | FAILED | ERROR | UNSTABLE
    status TEXT NOT NULL,
    trigger_source TEXT,
    group_name TEXT,
    error TEXT,
    output TEXT,
    report_bytes BIGINT NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    deleted_at BIGINT,
    UNIQUE (organization_id, task_id)
);
CREATE INDEX executions_list_idx ON executions (organization_id, deleted_at, created_at);
CREATE INDEX executions_active_idx ON executions (organization_id, status);

-- Report files known to the service; bytes live under <data-dir>/reports/<org>/<taskId>/<path>.
CREATE TABLE report_files (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    task_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, task_id, path)
);

-- Usage counters, changed in the same transaction as the data they count.
-- period is the UTC calendar month, 'YYYY-MM'. Storage bytes live on organizations.
CREATE TABLE usage_counters (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    test_runs BIGINT NOT NULL DEFAULT 0,
    ai_analyses BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, period)
);
