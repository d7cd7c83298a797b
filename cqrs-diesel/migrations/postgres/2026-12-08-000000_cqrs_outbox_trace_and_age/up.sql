-- The outbox entry's trace and age: `trace_context` holds the W3C trace context of the write
-- (JSON `{"traceparent": "...", "tracestate": "..."}`, NULL without one), sent by the relay as
-- the `traceparent`/`tracestate` headers; `created_at` is when the entry was inserted, set by
-- the database so that no write names it. Existing entries keep their ids and get the time of
-- the upgrade. Versions without these columns keep working on the upgraded table.
ALTER TABLE cqrs_outbox
    ADD COLUMN trace_context TEXT,
    ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
