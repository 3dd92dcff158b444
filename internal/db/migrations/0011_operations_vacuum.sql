-- Vacuum operations sooner than autovacuum's default, a fifth of the rows
-- changed. Every command adds an operation and completes it, and the
-- partial index of incomplete operations (operations_incomplete) keeps an
-- entry for each operation completed since the last vacuum. The
-- completer's round over all incomplete operations, every 2 s, reads them
-- all: 24,000 entries and 4 ms after 22,000 commands in evict-bench, and
-- on a table of 10,000,000 operations the default would let that grow to
-- 2,000,000 entries before a vacuum. A hundredth keeps it to 100,000 there.
ALTER TABLE operations SET (autovacuum_vacuum_scale_factor = 0.01);
