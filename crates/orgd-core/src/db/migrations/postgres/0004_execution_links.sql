-- Tickets filed from an execution (Linear issues, Monday.com items), newest last.
CREATE TABLE execution_links (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    -- linear | monday
    provider TEXT NOT NULL,
    -- Linear issue identifier (ABC-123) or Monday.com item id
    external_id TEXT NOT NULL,
    url TEXT NOT NULL,
    title TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX execution_links_execution_idx ON execution_links (execution_id, created_at);
