-- The object holding a report file's bytes when the store keeps each upload under a key of
-- its own (S3-compatible storage): `{organizationId}/{taskId}/{uploadId}` below the
-- configured prefix. NULL when the file lives at its path (the local directory).
ALTER TABLE report_files ADD COLUMN object_key TEXT;
