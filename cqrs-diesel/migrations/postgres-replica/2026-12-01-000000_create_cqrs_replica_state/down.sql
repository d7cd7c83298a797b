CREATE TABLE cqrs_tombstone (
    cqrs_id VARCHAR(255) NOT NULL,
    pk VARCHAR(255) NOT NULL,
    revision BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    PRIMARY KEY (cqrs_id, pk)
);
INSERT INTO cqrs_tombstone (cqrs_id, pk, revision, updated_us)
    SELECT cqrs_id, pk, revision, updated_us FROM cqrs_replica_state WHERE deleted;
DROP TABLE cqrs_replica_state;
