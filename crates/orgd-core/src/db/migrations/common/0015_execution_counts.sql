-- Live (not deleted) executions of an organization per status, changed in the same
-- transaction as the runs they count, so a list's `total` is a lookup instead of a count
-- over the organization's whole history. The unfiltered total is the sum of the statuses.
CREATE TABLE execution_counts (
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- PENDING | RUNNING | PASSED | FAILED | ERROR | UNSTABLE
    status TEXT NOT NULL,
    live BIGINT NOT NULL,
    PRIMARY KEY (organization_id, status)
);

INSERT INTO execution_counts (organization_id, status, live)
SELECT organization_id, status, COUNT(*) FROM executions
WHERE deleted_at IS NULL
GROUP BY organization_id, status;
