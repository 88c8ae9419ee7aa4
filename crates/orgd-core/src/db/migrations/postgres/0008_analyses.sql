-- AI failure analyses: one row per execution, also the durable queue the worker leases from.
CREATE TABLE analyses (
    execution_id TEXT PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- queued | running | completed | failed
    status TEXT NOT NULL,
    -- Runs started for this row; an expired lease is retried only while attempts < 2.
    attempts BIGINT NOT NULL DEFAULT 0,
    -- While running: until when the runner owns the row (epoch ms).
    lease_until BIGINT,
    model TEXT,
    provider TEXT,
    -- byok | platform
    key_source TEXT,
    input_tokens BIGINT,
    output_tokens BIGINT,
    root_cause TEXT,
    suggested_fix TEXT,
    reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX analyses_queue_idx ON analyses (status, lease_until);
