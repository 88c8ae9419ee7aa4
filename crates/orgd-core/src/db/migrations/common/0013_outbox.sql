-- The durable outbox: one row per event and destination, written in the transaction of the
-- change that caused it, leased by the delivery worker with one conditional UPDATE.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- The event's id (`webhook-id`), shared by the rows of one event, stable across retries.
    event_id TEXT NOT NULL,
    -- execution.finished | usage.threshold_crossed | integration.disabled | webhook.test | ...
    event_type TEXT NOT NULL,
    -- slack | webhook
    channel TEXT NOT NULL,
    -- The integration provider (slack) or the webhook id: pacing and health key on it.
    destination TEXT NOT NULL,
    -- The event as sent (`{"type","id","timestamp","data"}`), frozen when queued.
    payload TEXT NOT NULL,
    -- pending | delivering | delivered | failed
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Not attempted before this instant (epoch ms): retries, pacing and the analysis wait.
    due_at BIGINT NOT NULL,
    -- While delivering: until when the worker owns the row.
    lease_until BIGINT,
    -- The execution whose analysis this row waits for (due at once when it is stored).
    waits_for TEXT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX outbox_due_idx ON outbox (status, due_at);
CREATE INDEX outbox_destination_idx ON outbox (organization_id, destination, created_at);
CREATE INDEX outbox_waits_idx ON outbox (waits_for);
CREATE INDEX outbox_updated_idx ON outbox (updated_at);

-- The next instant a message may go to one destination, shared by every instance.
CREATE TABLE delivery_pacing (
    destination TEXT PRIMARY KEY,
    next_at BIGINT NOT NULL
);

-- Usage thresholds already crossed: at most one event per organization, resource, level and
-- month, decided by this key.
CREATE TABLE usage_thresholds (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- testRuns | users | storage
    resource TEXT NOT NULL,
    -- warning | critical
    level TEXT NOT NULL,
    -- YYYY-MM
    period TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, resource, level, period)
);

-- How the calls orgd makes with a saved integration went.
CREATE TABLE integration_health (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    last_success_at BIGINT,
    last_failure_at BIGINT,
    last_error TEXT,
    -- Failed calls since the last success, and the permanent ones among them (the provider
    -- refused the credential or the destination is gone), which count toward disabling.
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    permanent_failures BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (organization_id, provider)
);
