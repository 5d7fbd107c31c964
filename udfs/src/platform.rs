//! `platform_bucket`: the platform family of an event.
//!
//! Ingest stores `platform` as the client sent it, lower-cased. Profiles keep one
//! `last_seen_<platform>_at` column per family, so names a client may use for the same
//! family are folded here: `iOS`, `ipados`, `iphone` are `ios`; `browser`, `javascript`
//! are `web`; `backend`, `node` are `server`. Anything else has no family (`NULL`) and only
//! counts towards the platform-independent columns.

/// The platform families, in the order of the profile columns.
pub const FAMILIES: [&str; 4] = ["ios", "android", "web", "server"];

/// The family of `platform` (case-insensitive, surrounding spaces ignored), if any.
pub fn platform_bucket(platform: &str) -> Option<&'static str> {
    let p = platform.trim();
    let is = |names: &[&str]| names.iter().any(|n| p.eq_ignore_ascii_case(n));
    if is(&[
        "ios", "ipados", "iphone", "ipad", "tvos", "watchos", "visionos",
    ]) {
        Some("ios")
    } else if is(&["android", "android_tv", "wear_os"]) {
        Some("android")
    } else if is(&["web", "browser", "javascript", "js", "mobile_web"]) {
        Some("web")
    } else if is(&["server", "backend", "node", "api"]) {
        Some("server")
    } else {
        None
    }
}

/// The DataFusion adapter: `platform_bucket(platform) -> Utf8`.
#[cfg(feature = "datafusion")]
pub fn udf() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(crate::adapter::StrToStrUdf::new(
        "platform_bucket",
        platform_bucket,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_aliases_into_families() {
        assert_eq!(platform_bucket("ios"), Some("ios"));
        assert_eq!(platform_bucket(" iPadOS "), Some("ios"));
        assert_eq!(platform_bucket("Android"), Some("android"));
        assert_eq!(platform_bucket("javascript"), Some("web"));
        assert_eq!(platform_bucket("backend"), Some("server"));
        assert_eq!(platform_bucket("windows"), None);
        assert_eq!(platform_bucket(""), None);
        for f in FAMILIES {
            assert_eq!(platform_bucket(f), Some(f));
        }
    }
}
