-- The transactional outbox of cqrs-diesel: one row per message, written in the same
-- transaction as the model row, published and deleted by the outbox relay.
CREATE TABLE cqrs_outbox (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cqrs_id VARCHAR(255) NOT NULL,
    routing_key VARCHAR(512) NOT NULL,
    body LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
