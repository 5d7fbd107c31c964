//! Shared pieces of the benchmark programs.
//!
//! # Layout
//!
//! - [`zipf`]: Zipf-distributed ranks (user ids) for realistic skew.
//! - [`peak_rss_kb`]: the process's peak resident memory, from `/proc/self/status`.
//! - [`node`]: a `tidemark serve` child process with its address and keys.

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

pub mod node {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};

    use anyhow::{Context, bail};

    /// Microseconds since the Unix epoch.
    pub fn now_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    /// A running `tidemark` process (killed on drop).
    pub struct Proc(pub Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Proc {
        pub fn terminate(mut self) -> anyhow::Result<()> {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            self.0.wait()?;
            Ok(())
        }
    }

    pub struct Node {
        pub proc: Proc,
        pub url: String,
        pub admin: String,
        pub ingest: String,
    }

    /// Starts `bin serve` with `config` on a free port and waits until it is ready.
    pub fn serve(bin: &Path, config: &Path) -> anyhow::Result<Node> {
        start(Command::new(bin).args(["--config"]).arg(config).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
        ]))
        .with_context(|| format!("starting {}", bin.display()))
    }

    /// Starts `cmd` (a `tidemark serve`) and waits until it prints that it is ready.
    pub fn start(cmd: &mut Command) -> anyhow::Result<Node> {
        let mut child = cmd
            .env("TIDEMARK_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut url, mut admin, mut ingest) = (None, None, None);
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.strip_prefix("tidemark: listening on http://") {
                url = Some(format!("http://{}", a.trim()));
            }
            if let Some(k) = line.trim().strip_prefix("admin key:") {
                admin = Some(k.trim().to_string());
            }
            if let Some(k) = line.trim().strip_prefix("ingest key:") {
                ingest = Some(k.trim().to_string());
            }
            if line == "tidemark: ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (Some(url), Some(admin), Some(ingest)) = (url, admin, ingest) else {
            bail!("tidemark serve did not print its address and keys");
        };
        Ok(Node {
            proc: Proc(child),
            url,
            admin,
            ingest,
        })
    }
}
