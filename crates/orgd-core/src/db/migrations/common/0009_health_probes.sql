-- One row /health rewrites to see whether the database takes writes.
CREATE TABLE health_probes (
    id TEXT PRIMARY KEY,
    written_at BIGINT NOT NULL
);
