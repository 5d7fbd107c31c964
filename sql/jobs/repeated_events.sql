-- repeated_events: the ids with several copies among this run's new_events, as the 64-bit
-- `id_key` (event_key(environment, event_id)) that the runner adds to new_events.
--
-- Few ids repeat, so counted_events.sql sends only these through its LAG window. A hash
-- collision only sends a unique event through that exact comparison. The runner keeps
-- the result in memory: it is small and read twice, and with its exact row count
-- DataFusion builds each join's hash table from it instead of repartitioning new_events.
SELECT id_key, count(*) AS copies
FROM new_events
GROUP BY id_key
HAVING count(*) > 1
