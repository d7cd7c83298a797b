DROP TABLE cqrs_tombstone;
