ALTER TABLE cqrs_outbox
    DROP COLUMN created_at,
    DROP COLUMN trace_context;
