-- The state of every row a cqrs-diesel replica has applied a message to: the rank of that
-- message (cqrs_updated in microseconds, then cqrs_revision) and whether it was a DELETE. A
-- message is applied only when it ranks above this state (docs/DESIGN.md, "The order of one
-- row's messages"). Replaces cqrs_tombstone, whose rows are its deleted states.
CREATE TABLE cqrs_replica_state (
    cqrs_id TEXT NOT NULL,
    pk TEXT NOT NULL,
    revision BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (cqrs_id, pk)
);
INSERT INTO cqrs_replica_state (cqrs_id, pk, revision, updated_us, deleted)
    SELECT cqrs_id, pk, revision, updated_us, 1 FROM cqrs_tombstone;
DROP TABLE cqrs_tombstone;
