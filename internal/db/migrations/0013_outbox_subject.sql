-- The relay publishes the state rows of its own process's commands as they
-- are handed over, without reading them back (services/relay). When it
-- settles one, it deletes with it the rows of the same subject older than
-- it, which it supersedes, so that no leader after it publishes them over
-- it. This index finds them by subject: the outbox is a queue, and without
-- autovacuum a scan of it reads every dead row it ever held.
CREATE INDEX outbox_subject ON outbox (subject, seq);
