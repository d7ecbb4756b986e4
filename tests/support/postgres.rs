//! The store backends a test runs against: SQLite in a temporary directory, and PostgreSQL in a
//! fresh database of the private cluster `scripts/postgres-env.sh start` runs (its URL in
//! `GITAMP_TEST_POSTGRES`). A missing URL fails the test with the command to run: a skipped
//! backend would pass without testing anything.
//!
//! [`both_backends!`] turns `async fn name(db: TestDb)` into one `#[tokio::test]` per backend.

use std::path::{Path, PathBuf};

use gitamp::store::{AnyStore, PgStore, SqliteStore, StoreOptions};
use sqlx::Connection as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL of the test cluster, or a failure saying how to start one.
pub fn admin_url() -> String {
    match std::env::var("GITAMP_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "GITAMP_TEST_POSTGRES is not set: these tests need the private PostgreSQL cluster. \
             Run them through scripts/test.sh, or start it with \
             `scripts/postgres-env.sh install && eval \"$(scripts/postgres-env.sh start)\"` \
             (stop it with `scripts/postgres-env.sh stop`)"
        ),
    }
}

/// A database named `name` (lower-case letters, digits, `_`), empty: dropped (with any session
/// still on it) and created again, so reruns start clean and the cluster keeps one per test.
pub async fn fresh_database(name: &str) -> String {
    assert!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "database name {name:?}"
    );
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster {admin}: {e}"));
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .expect("drop the test database");
    let create = format!("CREATE DATABASE {name}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    let _ = conn.close().await;
    database_url(&admin, name)
}

/// `admin` with its database replaced by `name`.
pub fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let root = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    format!("{root}/{name}{query}")
}

/// One test's store: where it lives and how to open it again (a reopen is a restart).
pub struct TestDb {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database's URL.
    pub url: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend, name: &str) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_database(name).await),
        };
        TestDb { backend, dir, url }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn open(&self) -> AnyStore {
        self.open_with(StoreOptions::default()).await
    }

    pub async fn open_with(&self, opts: StoreOptions) -> AnyStore {
        match &self.url {
            None => AnyStore::Sqlite(
                SqliteStore::open_file(&self.dir.path().join("gitamp.db"), opts)
                    .await
                    .expect("open SQLite"),
            ),
            Some(url) => {
                AnyStore::Postgres(PgStore::connect(url, opts).await.expect("open PostgreSQL"))
            }
        }
    }

    /// The store a `gitamp serve` on `data_dir` with [`serve_args`](Self::serve_args) uses, for
    /// a test to read what it left (SQLite: `data_dir`'s file; PostgreSQL: the database).
    pub async fn open_server_store(&self, data_dir: &Path) -> AnyStore {
        match &self.url {
            None => AnyStore::Sqlite(SqliteStore::open(data_dir).await.expect("open SQLite")),
            Some(_) => self.open().await,
        }
    }

    /// The `gitamp serve` arguments that put a server on this store.
    pub fn serve_args(&self) -> Vec<String> {
        match &self.url {
            None => Vec::new(),
            Some(url) => vec!["--store".to_string(), url.clone()],
        }
    }
}

/// One `#[tokio::test]` per backend for each `async fn name(db: TestDb)` listed, with the
/// runtime flavour given in brackets if any (`name(flavor = "multi_thread")`); the PostgreSQL
/// database is named after the binary's crate and the test.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident $(($($flavor:tt)*))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test $(($($flavor)*))?]
                async fn $name() {
                    let db = $crate::support::postgres::TestDb::new(
                        $crate::support::postgres::Backend::Sqlite, "").await;
                    super::$name(db).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test $(($($flavor)*))?]
                async fn $name() {
                    let name = format!("{}_{}", env!("CARGO_CRATE_NAME"), stringify!($name));
                    let name: String = name.chars().take(63).collect();
                    let db = $crate::support::postgres::TestDb::new(
                        $crate::support::postgres::Backend::Postgres, &name).await;
                    super::$name(db).await
                }
            )*
        }
    };
}

/// Stop (`"stop"`) or start again (`"start"`) the private test cluster, through the script
/// that made it: a database outage for the tests of what replicas do meanwhile. Only a test
/// binary of its own may do this (the cluster is shared by every test running at that time).
pub fn cluster(action: &str) {
    let root = std::env::var("GITAMP_TEST_POSTGRES_ROOT")
        .unwrap_or_else(|_| panic!("GITAMP_TEST_POSTGRES_ROOT is not set: {}", admin_url()));
    let script = crate::support::workspace().join("scripts/postgres-env.sh");
    let out = std::process::Command::new(script)
        .arg(action)
        .env("GITAMP_TEST_POSTGRES_ROOT", root)
        .output()
        .expect("run scripts/postgres-env.sh");
    assert!(
        out.status.success(),
        "postgres-env.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
