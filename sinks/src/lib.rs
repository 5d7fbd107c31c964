//! Reserved for webhook delivery and bulk export (issues 6, 7). Intentionally empty.
