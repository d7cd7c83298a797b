-- Tombstones of cqrs-diesel replicas: the revision and time of the last DELETE applied to a
-- row, so that a late SAVE of an older revision cannot bring the deleted row back.
CREATE TABLE cqrs_tombstone (
    cqrs_id VARCHAR(255) NOT NULL,
    pk VARCHAR(255) NOT NULL,
    revision BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    PRIMARY KEY (cqrs_id, pk)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE utf8mb4_bin;
