-- Indexes in the order the lists read, so a first page (and a page after a cursor) is one
-- range of an index whatever the organization's history: executions newest first, also
-- within one status; members newest first.
CREATE INDEX executions_page_idx ON executions (organization_id, created_at, id)
    WHERE deleted_at IS NULL;
CREATE INDEX executions_status_page_idx ON executions (organization_id, status, created_at, id)
    WHERE deleted_at IS NULL;
-- Superseded by executions_page_idx (the list reads live executions only).
DROP INDEX executions_list_idx;
CREATE INDEX users_page_idx ON users (organization_id, created_at, id);
