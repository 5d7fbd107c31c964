//! Reserved for the UDFs the SQL jobs need (issue 3). Intentionally empty.
