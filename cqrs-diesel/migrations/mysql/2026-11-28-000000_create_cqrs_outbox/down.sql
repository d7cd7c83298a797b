DROP TABLE cqrs_outbox;
