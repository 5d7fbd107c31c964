-- counted_events: the events a job run counts, one row per event that is not a
-- duplicate, with its effective time.
--
-- Inputs registered by the runner:
--   new_events    rows of the `events` files added since the job's cursor (on a rebuild,
--                 every row of `events`)
--   prior_events  rows committed at or before the cursor whose received_at is within the
--                 dedup window before the earliest new row (empty on a rebuild)
--   job_params    one row: clock_skew_tolerance_us, dedup_window_us
--
-- Duplicates: a copy of (environment, event_id) is not counted when another copy was
-- received at most dedup_window before it (an earlier copy in this run, or any copy
-- already counted by an earlier run in that window). Ingest already drops re-sent ids
-- within the same window; this rule also covers several ingest nodes and rebuilds.
--
-- Clock skew: a device clock ahead of the server would put activity in the future, so an
-- occurred_at later than received_at + clock_skew_tolerance is replaced by received_at.
-- Late events (an old occurred_at, received now) keep their occurred_at.
WITH copies AS (
    SELECT
        e.environment,
        e.event_id,
        e.event_name,
        e.category,
        e.user_id,
        e.platform,
        e.occurred_at,
        e.received_at,
        LAG(e.received_at) OVER (
            PARTITION BY e.environment, e.event_id
            ORDER BY e.received_at, e.user_id, e.event_name, e.occurred_at
        ) AS previous_copy_at
    FROM new_events e
),
fresh AS (
    SELECT
        c.*,
        CAST(c.received_at AS BIGINT) - p.dedup_window_us AS dedup_from_us,
        CASE
            WHEN CAST(c.occurred_at AS BIGINT) > CAST(c.received_at AS BIGINT) + p.clock_skew_tolerance_us
                THEN c.received_at
            ELSE c.occurred_at
        END AS at
    FROM copies c CROSS JOIN job_params p
    WHERE c.previous_copy_at IS NULL
       OR CAST(c.received_at AS BIGINT) - CAST(c.previous_copy_at AS BIGINT) > p.dedup_window_us
)
SELECT
    f.environment,
    f.user_id,
    f.event_name,
    f.category,
    platform_bucket(f.platform) AS platform,
    f.received_at,
    f.at
FROM fresh f
WHERE NOT EXISTS (
    SELECT 1
    FROM prior_events q
    WHERE q.environment = f.environment
      AND q.event_id = f.event_id
      AND CAST(q.received_at AS BIGINT) >= f.dedup_from_us
)
