-- counted_events: the events a job run counts, one row per event that is not a
-- duplicate, with its effective time.
--
-- Inputs registered by the runner:
--   new_events       rows of the `events` files added since the job's cursor (on a rebuild,
--                    every row of `events`), plus id_key = event_key(environment, event_id)
--   repeated_events  repeated_events.sql over new_events (ids with several copies)
--   prior_events     rows committed at or before the cursor whose received_at is within
--                    the dedup window before the earliest new row (empty on a rebuild)
--   job_params       one row: clock_skew_tolerance_us, dedup_window_us
--
-- Duplicates: a copy of (environment, event_id) is not counted when another copy was
-- received at most dedup_window before it (an earlier copy in this run, or any copy
-- already counted by an earlier run in that window). Ingest already drops re-sent ids
-- within the same window; this rule also covers several ingest nodes and rebuilds.
--
-- Clock skew: a device clock ahead of the server would put activity in the future, so an
-- occurred_at later than received_at + clock_skew_tolerance is replaced by received_at.
-- Late events (an old occurred_at, received now) keep their occurred_at.
--
-- Plan notes (measured with DataFusion 55): a window over every event_id costs ~4 s per
-- million events (one tiny partition per id), so only the ids of repeated_events go
-- through LAG. Joins keep the small side on the left, which DataFusion builds its hash
-- table from (`repeated_events`, `prior_events`, the one-row `job_params` of each CROSS
-- JOIN; a large buffered left side made a cross join 10x slower). Outer joins are tested
-- with `IS NULL` on a column that is not a join key: DataFusion 55 turned
-- `r.event_id IS NULL` after `RIGHT JOIN ... ON e.event_id = r.event_id` into an empty
-- result.
WITH copies AS (
    SELECT
        e.environment, e.event_id, e.event_name, e.category, e.user_id, e.platform,
        e.occurred_at, e.received_at,
        LAG(e.received_at) OVER (
            PARTITION BY e.environment, e.event_id
            ORDER BY e.received_at, e.user_id, e.event_name, e.occurred_at
        ) AS previous_copy_at
    FROM repeated_events r
    JOIN new_events e ON e.id_key = r.id_key
),
fresh AS (
    SELECT e.environment, e.event_id, e.event_name, e.category, e.user_id, e.platform,
           e.occurred_at, e.received_at
    FROM repeated_events r
    RIGHT JOIN new_events e ON e.id_key = r.id_key
    WHERE r.copies IS NULL
    UNION ALL
    SELECT c.environment, c.event_id, c.event_name, c.category, c.user_id, c.platform,
           c.occurred_at, c.received_at
    FROM job_params p CROSS JOIN copies c
    WHERE c.previous_copy_at IS NULL
       OR CAST(c.received_at AS BIGINT) - CAST(c.previous_copy_at AS BIGINT) > p.dedup_window_us
),
timed AS (
    SELECT
        f.*,
        CAST(f.received_at AS BIGINT) - p.dedup_window_us AS dedup_from_us,
        CASE
            WHEN CAST(f.occurred_at AS BIGINT) > CAST(f.received_at AS BIGINT) + p.clock_skew_tolerance_us
                THEN f.received_at
            ELSE f.occurred_at
        END AS at
    FROM job_params p CROSS JOIN fresh f
)
SELECT
    t.environment,
    t.user_id,
    t.event_name,
    t.category,
    platform_bucket(t.platform) AS platform,
    t.received_at,
    t.at
FROM (
    SELECT environment, event_id, CAST(received_at AS BIGINT) AS received_us
    FROM prior_events
) q
RIGHT JOIN timed t
    ON q.environment = t.environment
   AND q.event_id = t.event_id
   AND q.received_us >= t.dedup_from_us
WHERE q.received_us IS NULL
