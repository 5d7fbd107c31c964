-- profiles: one partial profile per user from this run's counted_events.
--
-- created_at      first time tidemark received anything naming the user (any category)
-- first_seen_at   earliest effective time of a `platform`, `sdk` or `custom` event
-- last_seen_at    latest such time; last_seen_<family>_at per platform family
--                 (platform_bucket); `system` events never make a user "seen"
-- event_count     `platform`, `sdk` and `custom` events: activity (a `system` event such
--                 as `segment-entered` is tidemark's own and is not counted)
-- last_event_*    the latest such event (ties: the greater name)
-- updated_at      latest received_at of an event naming the user (any category)
--
-- The runner appends these rows; profiles_merge.sql folds them into one row per user.
SELECT
    environment,
    user_id,
    min(received_at) AS created_at,
    min(at) FILTER (WHERE category <> 'system') AS first_seen_at,
    max(at) FILTER (WHERE category <> 'system') AS last_seen_at,
    max(at) FILTER (WHERE category <> 'system' AND platform = 'ios') AS last_seen_ios_at,
    max(at) FILTER (WHERE category <> 'system' AND platform = 'android') AS last_seen_android_at,
    max(at) FILTER (WHERE category <> 'system' AND platform = 'web') AS last_seen_web_at,
    max(at) FILTER (WHERE category <> 'system' AND platform = 'server') AS last_seen_server_at,
    count(*) FILTER (WHERE category <> 'system') AS event_count,
    -- the name of the greatest (at, event_name): compared as text, microseconds padded to
    -- 16 digits (every time ingest accepts, 2000..2100, has 15 or 16), then the name; this
    -- is 2x cheaper in DataFusion 55 than last_value(event_name ORDER BY at, event_name)
    substr(max(lpad(CAST(CAST(at AS BIGINT) AS VARCHAR), 16, '0') || event_name)
        FILTER (WHERE category <> 'system'), 17) AS last_event_name,
    max(at) FILTER (WHERE category <> 'system') AS last_event_at,
    max(received_at) AS updated_at
FROM counted_events
GROUP BY environment, user_id
