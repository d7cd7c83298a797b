ALTER TABLE cqrs_replica_state DROP COLUMN seq;
ALTER TABLE cqrs_replica_state DROP COLUMN floor_us;
