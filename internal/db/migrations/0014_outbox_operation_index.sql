-- Nothing reads the outbox by operation: the relay reads it by seq and
-- settles by seq and by subject, and an operation's progress is counted in
-- operations.published_events. The index on operation_id (0001) only cost
-- every command an index entry per event, and the relay's deletes their
-- upkeep (docs/benchmarks.md, item 44).
DROP INDEX IF EXISTS outbox_operation;
