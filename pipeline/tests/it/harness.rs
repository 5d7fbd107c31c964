//! Test harness: temporary stores (local or S3), `tidemark serve` child processes, CLI runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    S3,
}

/// A real S3-protocol server (s3s-fs) on 127.0.0.1, on its own runtime thread.
pub struct S3Server {
    pub endpoint: String,
    _root: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub const S3_BUCKET: &str = "tidemark-test";
pub const S3_KEY: &str = "test-access-key";
pub const S3_SECRET: &str = "test-secret-key";

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join(S3_BUCKET)).expect("bucket dir");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
            b.build()
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send");
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let conn = http
                                .serve_connection(TokioIo::new(socket), service.clone())
                                .into_owned();
                            tokio::spawn(async move { let _ = conn.await; });
                        }
                        _ = &mut stop_rx => break,
                    }
                }
            });
        });
        let addr: SocketAddr = addr_rx.recv().expect("s3 server address");
        S3Server {
            endpoint: format!("http://{addr}"),
            _root: root,
            stop: Some(stop_tx),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A store for one test, with everything a child process needs to reach it.
pub struct TestStore {
    pub data: String,
    pub env: Vec<(String, String)>,
    pub wal_dir: PathBuf,
    pub tmp: tempfile::TempDir,
    _s3: Option<S3Server>,
}

impl TestStore {
    pub fn new(backend: Backend) -> TestStore {
        let tmp = tempfile::tempdir().expect("tempdir");
        let wal_dir = tmp.path().join("wal");
        match backend {
            Backend::Local => TestStore {
                data: tmp.path().join("data").to_string_lossy().into_owned(),
                env: Vec::new(),
                wal_dir,
                tmp,
                _s3: None,
            },
            Backend::S3 => {
                let s3 = S3Server::start();
                let prefix = uuid::Uuid::new_v4().simple().to_string();
                let env = vec![
                    ("AWS_ACCESS_KEY_ID".into(), S3_KEY.into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET.into()),
                    ("AWS_REGION".into(), "us-east-1".into()),
                    ("AWS_ENDPOINT".into(), s3.endpoint.clone()),
                    ("AWS_ALLOW_HTTP".into(), "true".into()),
                ];
                TestStore {
                    data: format!("s3://{S3_BUCKET}/{prefix}"),
                    env,
                    wal_dir,
                    tmp,
                    _s3: Some(s3),
                }
            }
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.tmp.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("TIDEMARK_LOG", "warn,tidemark=info");
        cmd
    }

    /// Runs a CLI command against this store (`--data` is added).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args).arg("--data").arg(&self.data);
        cmd.output().expect("run tidemark")
    }

    /// Runs a CLI command that must succeed (else panics with its stderr).
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tidemark {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The rows of `tidemark sql --format json`. Panics with stderr on failure.
    pub fn sql(&self, sql: &str) -> Vec<Value> {
        let out = self.cli(&["sql", "--format", "json", sql]);
        assert!(
            out.status.success(),
            "sql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: Value = serde_json::from_slice(&out.stdout).expect("json output");
        match answer["rows"].as_array() {
            Some(rows) => rows.clone(),
            None => panic!("no rows in {answer}"),
        }
    }

    /// Polls `sql` until `done` holds (or 30 s pass) and returns the last rows.
    pub fn sql_until(&self, sql: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.sql(sql);
            if done(&rows) || Instant::now() > deadline {
                return rows;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `tidemark serve` on 127.0.0.1:0 and waits until it is ready.
    pub fn serve(&self, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Node {
        self.serve_with_wal(&self.wal_dir, extra_args, extra_env)
    }

    /// [`TestStore::serve`] with its own WAL directory (another node on the same store).
    pub fn serve_with_wal(
        &self,
        wal_dir: &std::path::Path,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Node {
        let mut cmd = self.command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&self.data)
            .arg("--wal-dir")
            .arg(wal_dir)
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tidemark serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[tidemark] {line}");
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        let mut node = Node {
            child,
            addr: None,
            admin_key: None,
            ingest_key: None,
            lines: Vec::new(),
            later: None,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("tidemark: listening on http://") {
                        node.addr = Some(a.trim().parse().expect("addr"));
                    }
                    if let Some(k) = line.trim().strip_prefix("admin key:") {
                        node.admin_key = Some(k.trim().to_string());
                    }
                    if let Some(k) = line.trim().strip_prefix("ingest key:") {
                        node.ingest_key = Some(k.trim().to_string());
                    }
                    let ready = line == "tidemark: ready";
                    node.lines.push(line);
                    if ready {
                        node.later = Some(rx);
                        return node;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = node.child.try_wait() {
                        panic!("tidemark serve exited with {status}: {:#?}", node.lines);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("tidemark serve closed its output: {:#?}", node.lines)
                }
            }
        }
        panic!("tidemark serve did not become ready: {:#?}", node.lines);
    }

    /// Creates a key with the CLI and returns it (the last line of stdout).
    pub fn create_key(&self, env: &str, role: &str) -> String {
        let out = self.cli(&["keys", "create", "--env", env, "--role", role]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .lines()
            .last()
            .expect("a line")
            .to_string()
    }
}

/// A running `tidemark serve`.
pub struct Node {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    pub admin_key: Option<String>,
    pub ingest_key: Option<String>,
    pub lines: Vec<String>,
    /// What the node prints after it is ready.
    later: Option<mpsc::Receiver<String>>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("address"))
    }

    pub fn events_url(&self, env: &str) -> String {
        self.url(&format!("/v1/{env}/events"))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        resp.text().await.expect("metrics body")
    }

    pub fn ingest_key(&self) -> &str {
        self.ingest_key
            .as_deref()
            .expect("bootstrap printed an ingest key")
    }

    /// SIGTERM, then wait for exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tidemark did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// [`Node::terminate`], then `exit: <status>` and what the node printed after it was
    /// ready (stdout lines, and stderr lines prefixed `stderr: `).
    pub fn terminate_with_output(mut self) -> Vec<String> {
        let rx = self.later.take();
        let status = self.terminate();
        let mut out = vec![format!("exit: {status}")];
        if let Some(rx) = rx {
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                out.push(line);
            }
        }
        out
    }

    /// SIGKILL, no chance to flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reqwest client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// POSTs a JSON body; returns status and parsed body.
/// Posts `events` to `env` and expects them acknowledged (202).
pub async fn ingest(node: &Node, env: &str, key: &str, events: Value) {
    let (status, body) = post_json(&node.events_url(env), Some(key), &events.to_string()).await;
    assert_eq!(status, 202, "{body}");
}

pub async fn post_json(url: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// POSTs `body` with one extra header; returns the raw response.
pub async fn post_raw(
    url: &str,
    key: &str,
    header: (&str, &str),
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(key)
        .header(header.0, header.1)
        .body(body)
        .send()
        .await
        .expect("request")
}

/// Sends `method url` with an optional JSON body; returns status and parsed body.
pub async fn call(method: &str, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}
