-- The outbox entry's trace and age: `trace_context` holds the W3C trace context of the write
-- (JSON `{"traceparent": "...", "tracestate": "..."}`, NULL without one), sent by the relay as
-- the `traceparent`/`tracestate` headers; `created_at` is when the entry was inserted (UTC,
-- `YYYY-MM-DD HH:MM:SS.SSS`), set by the database so that no write names it.
--
-- SQLite cannot add a column whose default is not a constant, so the table is built anew and
-- the entries copied with their ids. Ids must never go back (replicas order a row's messages
-- by them): the AUTOINCREMENT high-water mark of the old table is carried over to the new
-- one, also when the outbox is empty.
CREATE TABLE cqrs_outbox_upgrade (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    cqrs_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL,
    trace_context TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
INSERT INTO cqrs_outbox_upgrade (id, cqrs_id, routing_key, body)
    SELECT id, cqrs_id, routing_key, body FROM cqrs_outbox ORDER BY id;
DELETE FROM sqlite_sequence WHERE name = 'cqrs_outbox_upgrade';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'cqrs_outbox_upgrade', seq FROM sqlite_sequence WHERE name = 'cqrs_outbox';
DROP TABLE cqrs_outbox;
ALTER TABLE cqrs_outbox_upgrade RENAME TO cqrs_outbox;
