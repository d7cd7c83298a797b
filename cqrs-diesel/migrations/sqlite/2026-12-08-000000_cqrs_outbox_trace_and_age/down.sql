-- Back to the table without `trace_context` and `created_at`, keeping the entries, their ids
-- and the AUTOINCREMENT high-water mark.
CREATE TABLE cqrs_outbox_downgrade (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    cqrs_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO cqrs_outbox_downgrade (id, cqrs_id, routing_key, body)
    SELECT id, cqrs_id, routing_key, body FROM cqrs_outbox ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'cqrs_outbox_downgrade';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'cqrs_outbox_downgrade', seq FROM sqlite_sequence WHERE name = 'cqrs_outbox';
DROP TABLE cqrs_outbox;
ALTER TABLE cqrs_outbox_downgrade RENAME TO cqrs_outbox;
