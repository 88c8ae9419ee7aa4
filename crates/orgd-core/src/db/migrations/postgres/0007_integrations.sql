-- Issue-tracker and notification integrations, one row per organization and provider.
CREATE TABLE integrations (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- github | gitlab | azuredevops | bitbucket | jira | linear | monday | slack
    provider TEXT NOT NULL,
    -- Non-secret fields as a JSON object (teamId, boardId, domain, ...).
    settings TEXT NOT NULL,
    -- The provider's credential sealed by the vault (v1.<key id>.<nonce>.<ciphertext>).
    secret TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    -- Bumped on every save; a save based on an older read is refused.
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, provider)
);

-- Customer-owned AI provider keys (BYOK), sealed by the vault.
CREATE TABLE ai_provider_keys (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- gemini | openai | anthropic
    provider TEXT NOT NULL,
    secret TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, provider)
);

-- The organization's chosen AI model; NULL = the catalogue's default.
ALTER TABLE organizations ADD COLUMN ai_default_model TEXT;

-- Idempotency-Key results, scoped to organization + route, kept 24 h. status/response are
-- NULL while the first request is still running.
CREATE TABLE idempotency_keys (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    route TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- SHA-256 hex of the route and the canonical request body.
    request_hash TEXT NOT NULL,
    status BIGINT,
    response TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (organization_id, route, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);
