//! `gitamp serve --store postgres://…` at start: a wrong, unreachable or refusing database is a
//! clear error and exit 2 (the password never shown), and a schema from a newer gitamp is
//! refused and left as it was. Against the private cluster of `scripts/postgres-env.sh`.

mod support;

use std::process::{Command, Output};

use gitamp::store::Store;
use sqlx::Connection as _;
use support::postgres::{admin_url, database_url, fresh_database};

/// `gitamp serve` with `store` (as the flag or, with `env`, as `GITAMP_STORE`), to its exit.
fn serve_with_store(store: &str, env: bool) -> Output {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitamp"));
    cmd.args(["serve", "--data-dir"])
        .arg(data.path())
        .args([
            "--opamp-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .env_remove("GITAMP_REPO")
        .env_remove("GITAMP_STORE");
    if env {
        cmd.env("GITAMP_STORE", store);
    } else {
        cmd.args(["--store", store]);
    }
    cmd.output().expect("run gitamp serve")
}

fn assert_exit_2(out: &Output, wants: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for want in wants {
        assert!(stderr.contains(want), "wanted {want:?} in stderr: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
}

#[test]
fn a_store_that_is_not_a_postgres_url_is_a_usage_error() {
    let out = serve_with_store("mysql://u:s3cret@127.0.0.1/db", false);
    assert_exit_2(
        &out,
        &["is not a PostgreSQL URL", "mysql://u:***@127.0.0.1/db"],
    );
}

#[test]
fn an_unreachable_database_is_a_clear_error_and_exit_2() {
    // A port nothing listens on (bound and released).
    let port = support::free_port();
    let url = format!("postgres://gitamp:s3cret@127.0.0.1:{port}/gitamp");
    let out = serve_with_store(&url, true);
    assert_exit_2(
        &out,
        &[
            "connecting to the PostgreSQL store",
            &format!("postgres://gitamp:***@127.0.0.1:{port}/gitamp"),
        ],
    );
}

#[test]
fn a_database_that_does_not_exist_is_a_clear_error_and_exit_2() {
    let url = database_url(&admin_url(), "gitamp_no_such_database");
    let out = serve_with_store(&url, false);
    assert_exit_2(
        &out,
        &[
            "connecting to the PostgreSQL store",
            "gitamp_no_such_database",
        ],
    );
}

#[tokio::test]
async fn a_schema_from_a_newer_gitamp_is_refused_and_left_as_it_was() {
    let url = fresh_database("store_postgres_newer_schema").await;
    {
        let store = gitamp::store::PgStore::connect(&url, Default::default())
            .await
            .expect("open a new store");
        assert_eq!(store.load_agents().await.expect("agents").len(), 0);
        store.close().await;
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("add a step from the future");
    let snapshot = async |conn: &mut sqlx::PgConnection| -> Vec<(i64, String)> {
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(conn)
            .await
            .expect("read the migrations")
    };
    let before = snapshot(&mut conn).await;

    let out = serve_with_store(&url, false);
    assert_exit_2(&out, &["written by a newer gitamp (schema step 9999"]);
    assert_eq!(
        snapshot(&mut conn).await,
        before,
        "the refused schema was modified"
    );
    let _ = conn.close().await;
}
