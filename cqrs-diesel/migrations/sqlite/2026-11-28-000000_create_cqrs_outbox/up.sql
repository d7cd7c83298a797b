-- The transactional outbox of cqrs-diesel: one row per message, written in the same
-- transaction as the model row, published and deleted by the outbox relay.
-- AUTOINCREMENT: ids are never reused, so a relay never mistakes a new entry for an old one.
CREATE TABLE cqrs_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    cqrs_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL
);
