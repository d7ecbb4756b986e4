//! Shared pieces of the benchmarks that drive a real `gitamp serve` child process: a bare Git
//! repository seeded with the embedded example, the server process itself (restartable on the
//! same ports and data directory), and what /proc says about it (RSS, CPU seconds).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// Runs git in `dir` with a fixed identity.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=gitamp bench",
            "-c",
            "user.email=bench@gitamp.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Resident set size of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The largest resident set size the process has had, in KiB (what an out-of-memory killer
/// or a container limit meets).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The whole machine's CPU time so far, from the first line of /proc/stat (in clock ticks).
/// Between two readings it says how busy the machine was and how much of its time the
/// hypervisor gave to other guests (steal): on a shared virtual machine the same binary's
/// latencies vary by that, so the figures come with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    total: u64,
    idle: u64,
    steal: u64,
}

impl MachineCpu {
    pub fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        MachineCpu::parse(stat.lines().next()?)
    }

    /// `cpu  user nice system idle iowait irq softirq steal guest guest_nice` (guest time is
    /// counted in user already).
    fn parse(line: &str) -> Option<MachineCpu> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 8 {
            return None;
        }
        Some(MachineCpu {
            total: v.iter().sum(),
            idle: v[3] + v[4],
            steal: v[7],
        })
    }

    /// Percent of the machine's CPU time between `self` and `later` that was busy (steal
    /// included) and that was stolen.
    pub fn shares(&self, later: &MachineCpu) -> (f64, f64) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let idle = later.idle.saturating_sub(self.idle) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        (100.0 * (total - idle) / total, 100.0 * steal / total)
    }
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat (utime + stime over the
/// clock tick rate).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime) of the full line are 12 and 13 here (state is 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// The p-quantile (0..=1) of sorted values, nearest rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// A bare repository (`remote.git`) and a working clone (`work`) holding the embedded example
/// repository, in a temporary directory that lives as long as this value.
pub struct BenchRepo {
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
    pub work: PathBuf,
}

impl BenchRepo {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let remote = dir.path().join("remote.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&remote)?;
        std::fs::create_dir_all(&work)?;
        git(&remote, &["init", "-q", "--bare", "-b", "main"])?;
        git(&work, &["init", "-q", "-b", "main"])?;
        for (path, bytes) in crate::embedded::snapshot().files {
            let target = work.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, &bytes[..])?;
        }
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", "bench: initial"])?;
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                remote.to_str().context("utf-8 path")?,
            ],
        )?;
        git(&work, &["push", "-q", "origin", "main"])?;
        Ok(BenchRepo { dir, remote, work })
    }

    /// Commits a change to the staging processor (a new rendered hash for `staging`) and
    /// pushes it.
    pub fn commit_staging_change(&self, round: &str) -> anyhow::Result<()> {
        // Edit the embedded original, not the current file: a second round must replace the
        // first round's line, not add another (a duplicate key is rightly rejected).
        let file = self.work.join("processors/env-staging.yaml");
        let original = crate::embedded::snapshot()
            .files
            .get("processors/env-staging.yaml")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .context("the embedded example has processors/env-staging.yaml")?;
        std::fs::write(
            &file,
            original.replacen(
                "deployment.environment: staging",
                &format!("deployment.environment: staging\n      bench.round: \"{round}\""),
                1,
            ),
        )?;
        git(
            &self.work,
            &["commit", "-q", "-am", &format!("bench round {round}")],
        )?;
        git(&self.work, &["push", "-q", "origin", "main"])?;
        Ok(())
    }
}

/// A `gitamp serve` child process on the bench repository.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    /// OpAMP listener, host:port.
    pub opamp: String,
    /// Status API listener, host:port.
    pub api: String,
    pub token: String,
    data_dir: PathBuf,
    remote: PathBuf,
    token_file: PathBuf,
    heartbeat: Duration,
    /// `--store` (replicas on PostgreSQL); `None` is SQLite in the data directory.
    store: Option<String>,
}

impl Server {
    /// Starts the server on free ports.
    pub fn start(repo: &BenchRepo, heartbeat: Duration) -> anyhow::Result<Server> {
        Self::start_replica(repo, heartbeat, None, 0)
    }

    /// Starts replica `index` of a fleet sharing `store` (its own data directory), or the one
    /// server on SQLite when `store` is `None`.
    pub fn start_replica(
        repo: &BenchRepo,
        heartbeat: Duration,
        store: Option<&str>,
        index: usize,
    ) -> anyhow::Result<Server> {
        let token = "bench-token".to_string();
        let token_file = repo.dir.path().join("token");
        std::fs::write(&token_file, &token)?;
        let data = match index {
            0 => repo.dir.path().join("data"),
            i => repo.dir.path().join(format!("data-{i}")),
        };
        Self::spawn(
            &repo.remote,
            &token_file,
            &data,
            "127.0.0.1:0",
            "127.0.0.1:0",
            heartbeat,
            token,
            store.map(str::to_string),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        remote: &Path,
        token_file: &Path,
        data_dir: &Path,
        opamp: &str,
        api: &str,
        heartbeat: Duration,
        token: String,
        store: Option<String>,
    ) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating this binary")?;
        // GITAMP_BENCH_SERVER_WRAPPER="heaptrack -o /tmp/ht" (or "perf record -g -o ...") runs
        // the server under a profiler. Its RSS and CPU are then the wrapper's, not the server's.
        let wrapper = std::env::var("GITAMP_BENCH_SERVER_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("serve")
            .args(["--repo", &format!("file://{}", remote.display())])
            .args([
                "--poll",
                "3600",
                "--opamp-listen",
                opamp,
                "--api-listen",
                api,
            ])
            .args(["--heartbeat", &crate::cli::duration::to_arg(heartbeat)])
            .arg("--webhook-token-file")
            .arg(token_file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(store.iter().flat_map(|s| ["--store", s.as_str()]))
            // GITAMP_BENCH_SERVER_LOG=<file> keeps the server's log (level from RUST_LOG).
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("GITAMP_BENCH_SERVER_LOG") {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
                None => Stdio::null(),
            })
            .spawn()
            .context("starting gitamp serve")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("server stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // Logs go to stderr (the log file above); stdout carries the listening line. Anything
        // else there is copied to the log, and the pipe is kept drained after it.
        let mut log = std::env::var_os("GITAMP_BENCH_SERVER_LOG").and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("gitamp serve ended before listening");
            }
            if line.starts_with("gitamp listening ") {
                break;
            }
            if let Some(f) = log.as_mut() {
                let _ = std::io::Write::write_all(f, line.as_bytes());
            }
        }
        std::thread::spawn(move || {
            let mut buf = String::new();
            while reader.read_line(&mut buf).is_ok_and(|n| n > 0) {
                if let Some(f) = log.as_mut() {
                    let _ = std::io::Write::write_all(f, buf.as_bytes());
                }
                buf.clear();
            }
        });
        let addr = |key: &str| -> anyhow::Result<String> {
            line.split_whitespace()
                .find_map(|p| p.strip_prefix(key))
                .map(str::to_string)
                .with_context(|| format!("server did not print {key}: {line:?}"))
        };
        Ok(Server {
            pid,
            opamp: addr("opamp=")?,
            api: addr("api=")?,
            child,
            token,
            data_dir: data_dir.to_path_buf(),
            remote: remote.to_path_buf(),
            token_file: token_file.to_path_buf(),
            heartbeat,
            store,
        })
    }

    /// kill -9, then start again on the same ports and data directory. The ports may linger a
    /// moment; binding is retried for a few seconds.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut last = None;
        for _ in 0..50 {
            match Self::spawn(
                &self.remote,
                &self.token_file,
                &self.data_dir,
                &self.opamp,
                &self.api,
                self.heartbeat,
                self.token.clone(),
                self.store.clone(),
            ) {
                Ok(s) => {
                    *self = s;
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid).unwrap_or(0)
    }

    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid).unwrap_or(0)
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid).unwrap_or(0.0)
    }

    /// Fires the generic webhook.
    pub async fn webhook(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let resp = client
            .post(format!("http://{}/webhooks/generic", self.api))
            .bearer_auth(&self.token)
            .body("{}")
            .send()
            .await
            .context("webhook")?;
        if !resp.status().is_success() {
            bail!("webhook answered {}", resp.status());
        }
        Ok(())
    }

    /// Reconciler plans so far and their total seconds, from `/metrics`
    /// (`gitamp_reconcile_duration_seconds` count and sum).
    pub async fn plan_stats(&self, client: &reqwest::Client) -> (u64, f64) {
        let Ok(resp) = client
            .get(format!("http://{}/metrics", self.api))
            .send()
            .await
        else {
            return (0, 0.0);
        };
        let text = resp.text().await.unwrap_or_default();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let duration = crate::telemetry::RECONCILE_DURATION;
        (
            value(&format!("{duration}_count")) as u64,
            value(&format!("{duration}_sum")),
        )
    }

    /// `/api/v1/status` agent counts: (connected, synced).
    pub async fn agent_counts(&self, client: &reqwest::Client) -> anyhow::Result<(u64, u64)> {
        let v: serde_json::Value = client
            .get(format!("http://{}/api/v1/status", self.api))
            .send()
            .await?
            .json()
            .await?;
        let agents = &v["agents"];
        let connected = agents["connected"].as_u64().unwrap_or(0);
        let synced = agents["by_status"]["synced"].as_u64().unwrap_or(0);
        Ok((connected, synced))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_shares_come_from_proc_stat_fields() {
        let a = MachineCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0").unwrap();
        let b = MachineCpu::parse("cpu  200 0 100 850 50 0 0 100 7 0").unwrap();
        let (busy, stolen) = a.shares(&b);
        assert_eq!((busy.round(), stolen.round()), (83.0, 33.0));
        assert_eq!(MachineCpu::parse("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(MachineCpu::parse("cpu  1 2 3"), None);
    }
}
