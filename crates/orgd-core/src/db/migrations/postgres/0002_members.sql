CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    -- SHA-256 hex of the plain token; the token itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    -- pending | accepted | revoked | expired
    status TEXT NOT NULL,
    invited_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    accepted_at BIGINT
);
-- One pending invitation per email per organization.
CREATE UNIQUE INDEX invitations_one_pending_idx ON invitations (organization_id, email) WHERE status = 'pending';
CREATE INDEX invitations_organization_idx ON invitations (organization_id, status, expires_at);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- SHA-256 hex of the secret; the secret itself is never stored.
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
