-- profile_attributes: partial state of each user's custom fields and tags from this run's
-- new_changes (the rows of `profile_changes` added since the job's cursor). One row per
-- (environment, user_id, kind, name); kind is 'field' or 'tag'.
--
-- change_id is 32 characters whose text order is the write order (see
-- pipeline/src/users/change_id.rs), so "first" and "last" are min and max of text that
-- starts with it:
--   first_set_id  the first `set` of the field
--   first_once    the first `set_once`: its change id, then the value's JSON text
--   last_write    the last `set`/`unset` (`tag`/`untag`): its change id, then '+' and the
--                 value (set; empty for a tag) or '-' (unset, untag)
--   created_at    the first write naming the user: a write creates the profile
--   updated_at    the last write
-- Merging runs is min/min/max/min/max (profile_attributes_merge.sql), and
-- profiles_view.sql resolves the value: `set_once` counts only when it came before every
-- `set` and after the last `set`/`unset` it competes with.
SELECT
    environment,
    user_id,
    CASE WHEN op IN ('tag', 'untag') THEN 'tag' ELSE 'field' END AS kind,
    name,
    min(CASE WHEN op = 'set' THEN change_id END) AS first_set_id,
    min(CASE WHEN op = 'set_once' THEN change_id || value END) AS first_once,
    max(CASE
        WHEN op IN ('set', 'tag') THEN change_id || '+' || coalesce(value, '')
        WHEN op IN ('unset', 'untag') THEN change_id || '-'
    END) AS last_write,
    min(at) AS created_at,
    max(at) AS updated_at
FROM new_changes
GROUP BY environment, user_id, CASE WHEN op IN ('tag', 'untag') THEN 'tag' ELSE 'field' END, name
