-- The outbox entry's trace and age: `trace_context` holds the W3C trace context of the write
-- (JSON `{"traceparent": "...", "tracestate": "..."}`, NULL without one), sent by the relay as
-- the `traceparent`/`tracestate` headers; `created_at` is when the entry was inserted (UTC
-- when the session's time zone is), set by the database so that no write names it. Existing
-- entries keep their ids and get the time of the upgrade; AUTO_INCREMENT is kept. Versions
-- without these columns keep working on the upgraded table.
ALTER TABLE cqrs_outbox
    ADD COLUMN trace_context TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD COLUMN created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6);
