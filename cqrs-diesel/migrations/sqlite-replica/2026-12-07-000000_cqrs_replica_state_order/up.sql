-- The order of one row's messages without trusting master clocks within a life
-- (docs/DESIGN.md, "The order of one row's messages"): `seq` is the highest outbox sequence
-- number (the `x-cqrs-seq` header of a cqrs-diesel master) among the messages applied to the
-- row, NULL when none carried one; `floor_us` is the `cqrs_updated` of the last DELETE applied
-- before the row's current life, NULL when none is known. Existing states keep NULL in both.
ALTER TABLE cqrs_replica_state ADD COLUMN seq BIGINT;
ALTER TABLE cqrs_replica_state ADD COLUMN floor_us BIGINT;
