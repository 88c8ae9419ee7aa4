-- Outgoing webhooks: at most 10 per organization, each subscribed to event types.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- JSON array of event types, or ["*"].
    events TEXT NOT NULL,
    description TEXT,
    enabled BIGINT NOT NULL,
    -- The signing secret sealed by the vault; during a rotation also the previous one, which
    -- keeps signing until previous_secret_until (epoch ms).
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until BIGINT,
    -- Deliveries in a row that failed all their attempts, and since when deliveries fail
    -- without a success in between (both reset by a success).
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_organization_idx ON webhooks (organization_id, created_at);
