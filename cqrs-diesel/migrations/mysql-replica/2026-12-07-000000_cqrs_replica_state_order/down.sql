ALTER TABLE cqrs_replica_state DROP COLUMN seq, DROP COLUMN floor_us;
