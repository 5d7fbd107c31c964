-- profiles_merge: folds partial profiles (`profile_parts`, the rows of the Delta table
-- `profiles`) into one row per user: first = min, last = max, count = sum. Readers see
-- this view as `profiles`; compaction rewrites the table with it.
SELECT
    environment,
    user_id,
    min(created_at) AS created_at,
    min(first_seen_at) AS first_seen_at,
    max(last_seen_at) AS last_seen_at,
    max(last_seen_ios_at) AS last_seen_ios_at,
    max(last_seen_android_at) AS last_seen_android_at,
    max(last_seen_web_at) AS last_seen_web_at,
    max(last_seen_server_at) AS last_seen_server_at,
    sum(event_count) AS event_count,
    last_value(last_event_name ORDER BY last_event_at NULLS FIRST, last_event_name NULLS FIRST) AS last_event_name,
    max(last_event_at) AS last_event_at,
    max(updated_at) AS updated_at
FROM profile_parts
GROUP BY environment, user_id
