-- profile_attributes_merge: folds partial attribute rows (`profile_attribute_parts`, the
-- rows of the Delta table `profile_attributes`) into one row per user, kind and name.
SELECT
    environment,
    user_id,
    kind,
    name,
    min(first_set_id) AS first_set_id,
    min(first_once) AS first_once,
    max(last_write) AS last_write,
    min(created_at) AS created_at,
    max(updated_at) AS updated_at
FROM profile_attribute_parts
GROUP BY environment, user_id, kind, name
