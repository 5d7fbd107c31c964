-- event_stats: per user and event name, the first and last effective time and the count,
-- of this run's counted_events (every category, `system` included).
SELECT
    environment,
    user_id,
    event_name,
    min(at) AS first_at,
    max(at) AS last_at,
    count(*) AS "count"
FROM counted_events
GROUP BY environment, user_id, event_name
