//! Shared pieces of the benchmark programs.
//!
//! # Layout
//!
//! - [`zipf`]: Zipf-distributed ranks (user ids) for realistic skew.
//! - [`peak_rss_kb`]: the process's peak resident memory, from `/proc/self/status`.

pub mod zipf {
    use rand::Rng;

    /// Cumulative Zipf weights for ranks 1..=n.
    pub fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        cdf.iter_mut().for_each(|c| *c /= acc);
        cdf
    }

    /// A rank in `0..n`, drawn from `cdf`.
    pub fn sample(cdf: &[f64], rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        cdf.partition_point(|c| *c < u)
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`), 0 where unavailable.
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
