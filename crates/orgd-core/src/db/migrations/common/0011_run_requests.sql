-- The original's clients (API.md, "Compatibility with the original's clients"): where a run
-- came from, the environment its run request named, and the run request itself.
-- Every run recorded before this migration came through POST /api/executions.
ALTER TABLE executions ADD COLUMN source TEXT NOT NULL DEFAULT 'external-ci';
ALTER TABLE executions ADD COLUMN environment TEXT;

-- What a runner needs to start a run requested through POST /api/execution-request.
CREATE TABLE run_requests (
    execution_id TEXT PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    image TEXT NOT NULL,
    command TEXT NOT NULL,
    folder TEXT NOT NULL,
    -- JSON array of strings.
    tests TEXT NOT NULL,
    base_url TEXT,
    -- JSON array of the envVars names: views show them with masked values.
    env_names TEXT NOT NULL,
    -- The envVars object as JSON, sealed by the vault for run-request:<execution id>;
    -- NULL when the request had none.
    env_values TEXT,
    created_at BIGINT NOT NULL
);

-- A run's start time is started_at, else created_at. The grouped view reads a group's newest
-- runs by it; time filters range over it. Only live runs are looked up this way.
CREATE INDEX executions_group_start_idx
    ON executions (organization_id, group_name, (COALESCE(started_at, created_at)), id)
    WHERE deleted_at IS NULL;
CREATE INDEX executions_start_idx
    ON executions (organization_id, (COALESCE(started_at, created_at)))
    WHERE deleted_at IS NULL;
