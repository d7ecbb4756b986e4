//! N `gitamp serve` replicas of one fleet on the private PostgreSQL cluster: one Git remote,
//! one database, a data directory each (tests/replicas*.rs).

use std::path::PathBuf;
use std::time::Duration;

use super::postgres::fresh_database;
use super::{GitFixture, Server, eventually, get_json};

const WAIT: Duration = Duration::from_secs(60);

/// N replicas of one fleet: one Git remote, one database, a data directory each.
pub struct Fleet {
    pub fixture: GitFixture,
    pub url: String,
    pub token: String,
    pub dirs: tempfile::TempDir,
    pub servers: Vec<Server>,
}

impl Fleet {
    pub async fn start(name: &str, n: usize) -> Fleet {
        let fixture = GitFixture::with_example_repo();
        let url = fresh_database(name).await;
        let dirs = tempfile::tempdir().expect("tempdir");
        let token = "replica-webhook-token".to_string();
        let mut fleet = Fleet {
            fixture,
            url,
            token,
            dirs,
            servers: Vec::new(),
        };
        for i in 0..n {
            let server = fleet.start_replica(i);
            fleet.servers.push(server);
        }
        fleet
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dirs.path().join(format!("replica-{i}"))
    }

    pub fn args(&self) -> Vec<String> {
        let token_file = super::write_token(self.dirs.path(), &self.token);
        let mut args = super::gitops_args(&self.fixture, "127.0.0.1:0", &token_file);
        args.extend(["--store".into(), self.url.clone()]);
        args
    }

    pub fn start_replica(&self, i: usize) -> Server {
        let args = self.args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start(&self.data_dir(i), &argv)
    }

    /// The index of the replica that says it leads, once exactly one of the live ones does.
    pub async fn leader(&self, live: &[usize]) -> usize {
        eventually(WAIT, "exactly one live replica leads", async || {
            let mut leaders = Vec::new();
            for &i in live {
                let status = get_json(&self.servers[i].api_url("/api/v1/status")).await;
                if status["cluster"]["leader"] == true {
                    leaders.push(i);
                }
            }
            match leaders.as_slice() {
                [one] => Ok(*one),
                other => Err(format!("leaders: {other:?}")),
            }
        })
        .await
    }

    pub async fn webhook(&self, i: usize) {
        let status = super::post_webhook(&self.servers[i], &self.token).await;
        assert_eq!(status / 100, 2, "webhook answered {status}");
    }

    pub async fn served(&self, i: usize) -> Option<String> {
        get_json(&self.servers[i].api_url("/api/v1/status")).await["current_revision"]
            .as_str()
            .map(str::to_string)
    }
}
