-- The state of every row a cqrs-diesel replica has applied a message to: the rank of that
-- message (cqrs_updated in microseconds, then cqrs_revision) and whether it was a DELETE. A
-- message is applied only when it ranks above this state (docs/DESIGN.md, "The order of one
-- row's messages"), and locking the state rows serializes replica processes that apply the same
-- row. Replaces cqrs_tombstone, whose rows are its deleted states. Binary collation: keys
-- differing in case are different keys, and every process locks rows in the same order.
CREATE TABLE cqrs_replica_state (
    cqrs_id VARCHAR(255) NOT NULL,
    pk VARCHAR(255) NOT NULL,
    revision BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (cqrs_id, pk)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_bin;
INSERT INTO cqrs_replica_state (cqrs_id, pk, revision, updated_us, deleted)
    SELECT cqrs_id, pk, revision, updated_us, TRUE FROM cqrs_tombstone;
DROP TABLE cqrs_tombstone;
