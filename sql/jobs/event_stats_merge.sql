-- event_stats_merge: folds partial rows (`event_stats_parts`, the rows of the Delta table
-- `event_stats`) into one row per (user, event name). Readers see it as `event_stats`.
SELECT
    environment,
    user_id,
    event_name,
    min(first_at) AS first_at,
    max(last_at) AS last_at,
    sum("count") AS "count"
FROM event_stats_parts
GROUP BY environment, user_id, event_name
