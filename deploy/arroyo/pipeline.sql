-- An Arroyo pipeline over tidemark's live event stream: per-minute activity by platform
-- family and event name, computed with tidemark's own UDFs (udfs/arroyo/defs/), written
-- as Parquet. create_pipeline.sh fills in TIDEMARK_STREAM_URL and OUTPUT_PATH; the read
-- key stays a {{ TIDEMARK_READ_KEY }} placeholder that Arroyo substitutes from its own
-- environment (the SSE source's `headers` option is a var-str), so it is never stored
-- in the pipeline.
--
-- The SSE source remembers the id of the last event in each checkpoint and reconnects
-- with Last-Event-ID, which tidemark answers with the events after it: a restored
-- pipeline neither skips nor repeats events.

CREATE TABLE tidemark_events (
    value JSON
) WITH (
    connector = 'sse',
    endpoint = '${TIDEMARK_STREAM_URL}',
    headers = 'Authorization:Bearer {{ TIDEMARK_READ_KEY }}',
    format = 'json',
    'json.unstructured' = 'true'
);

CREATE TABLE activity_parquet (
    minute_start TIMESTAMP,
    platform TEXT,
    event_name TEXT,
    events BIGINT,
    users BIGINT,
    purchases_in_usd BIGINT
) WITH (
    connector = 'filesystem',
    type = 'sink',
    path = '${OUTPUT_PATH}',
    format = 'parquet',
    rollover_seconds = '60'
);

INSERT INTO activity_parquet
SELECT
    window.start AS minute_start,
    platform,
    event_name,
    count(*) AS events,
    count(DISTINCT user_id) AS users,
    sum(CASE WHEN json_get_str(properties, 'currency') = 'USD' THEN 1 ELSE 0 END) AS purchases_in_usd
FROM (
    SELECT
        json_get_str(value, 'user_id') AS user_id,
        json_get_str(value, 'event_name') AS event_name,
        coalesce(platform_bucket(json_get_str(value, 'platform')), 'other') AS platform,
        json_get(value, 'properties') AS properties
    FROM tidemark_events
)
GROUP BY tumble(interval '1 minute'), platform, event_name;
