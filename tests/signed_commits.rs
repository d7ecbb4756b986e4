//! Signed commits only (`--verify-signatures`), end to end: real commits signed with `git`, SSH
//! keys made by `ssh-keygen` and an OpenPGP key made by `gpg`, all generated here, pushed to a
//! real remote that a running `gitamp serve` fetches. A tip signed by a trusted key (SSH or
//! OpenPGP) is served; an unsigned tip, a tampered commit, a key not in the lists and a
//! force-push to an unsigned commit are each rejected like an invalid revision: the last good
//! revision keeps serving, and the status names the commit and the key.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{GitOpsServer, Server, eventually, get_json, post_webhook};

const WAIT: Duration = Duration::from_secs(60);

/// `cmd` with `args`, which must succeed; its stdout.
fn run(cmd: &str, dir: &Path, env: &[(&str, &Path)], args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap_or_else(|e| panic!("{cmd} runs: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Keys made for the test: SSH `alice` (trusted), SSH `mallory` (not), OpenPGP `bob` (trusted).
struct Keys {
    dir: tempfile::TempDir,
    bob_fingerprint: String,
}

impl Keys {
    fn make() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for name in ["alice", "mallory"] {
            run(
                "ssh-keygen",
                d,
                &[],
                &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name],
            );
        }
        let alice = std::fs::read_to_string(d.join("alice.pub")).expect("alice.pub");
        std::fs::write(
            d.join("allowed_signers"),
            format!("# who may sign\nalice@example.com {alice}"),
        )
        .expect("write allowed_signers");

        let gnupg = d.join("gnupg");
        std::fs::create_dir(&gnupg).expect("mkdir gnupg");
        set_private(&gnupg);
        let env = [("GNUPGHOME", gnupg.as_path())];
        run(
            "gpg",
            d,
            &env,
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Bob <bob@example.com>",
                "ed25519",
                "sign",
                "never",
            ],
        );
        let listing = run(
            "gpg",
            d,
            &env,
            &["--batch", "--with-colons", "--list-secret-keys"],
        );
        let bob_fingerprint = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("bob's fingerprint");
        let public = run(
            "gpg",
            d,
            &env,
            &["--batch", "--armor", "--export", &bob_fingerprint],
        );
        std::fs::write(d.join("trusted.asc"), public).expect("write trusted.asc");
        Keys {
            dir,
            bob_fingerprint,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `git commit -a -S` in `work` with an SSH key.
    fn commit_ssh(&self, work: &Path, key: &str, message: &str) -> String {
        let key = self.path(key);
        let key = key.to_str().expect("utf-8 path");
        commit_signed(
            work,
            &[],
            ("Alice", "alice@example.com"),
            ("ssh", key),
            message,
        )
    }

    /// `git commit -a -S` in `work` with bob's OpenPGP key.
    fn commit_gpg(&self, work: &Path, message: &str) -> String {
        let gnupg = self.path("gnupg");
        commit_signed(
            work,
            &[("GNUPGHOME", gnupg.as_path())],
            ("Bob", "bob@example.com"),
            ("openpgp", &self.bob_fingerprint),
            message,
        )
    }
}

/// `git commit -a -S` in `work` as `(name, email)` with `(gpg.format, user.signingkey)`;
/// returns the commit.
fn commit_signed(
    work: &Path,
    env: &[(&str, &Path)],
    (name, email): (&str, &str),
    (format, key): (&str, &str),
    message: &str,
) -> String {
    let settings = [
        format!("user.name={name}"),
        format!("user.email={email}"),
        format!("gpg.format={format}"),
        format!("user.signingkey={key}"),
    ];
    let mut args: Vec<&str> = Vec::new();
    for setting in &settings {
        args.extend(["-c", setting.as_str()]);
    }
    args.extend(["commit", "-q", "-a", "-S", "-m", message]);
    run("git", work, env, &args);
    run("git", work, &[], &["rev-parse", "HEAD"])
}

#[cfg(unix)]
fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
}

/// Push the work clone's HEAD (forced or not), ring the webhook.
async fn announce(gitops: &GitOpsServer, force: bool) {
    gitops.fixture.push(force);
    let status = post_webhook(&gitops.server, &gitops.token).await;
    assert_eq!(status / 100, 2, "webhook answered {status}");
}

/// Wait until the server serves `sha`.
async fn served(server: &Server, sha: &str) {
    let url = server.api_url("/api/v1/status");
    eventually(WAIT, &format!("{sha} is served"), async || {
        let st = get_json(&url).await;
        if st["current_revision"] == sha {
            Ok(())
        } else {
            Err(format!("status: {st}"))
        }
    })
    .await;
}

/// Wait until `sha` is the last rejected revision while `serving` is still served; return the
/// rejection's one diagnostic message after checking its code.
async fn rejected(server: &Server, sha: &str, serving: Option<&str>) -> String {
    let url = server.api_url("/api/v1/status");
    let st = eventually(WAIT, &format!("{sha} is rejected"), async || {
        let st = get_json(&url).await;
        if st["last_rejected"]["revision"] == sha {
            Ok(st)
        } else {
            Err(format!("status: {st}"))
        }
    })
    .await;
    match serving {
        Some(good) => assert_eq!(st["current_revision"], good, "status: {st}"),
        None => assert!(st["current_revision"].is_null(), "status: {st}"),
    }
    let diagnostics = st["last_rejected"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(diagnostics.len(), 1, "only the signature is reported: {st}");
    assert_eq!(diagnostics[0]["code"], "E041", "status: {st}");
    assert_eq!(diagnostics[0]["name"], "unverified-commit", "status: {st}");
    let message = diagnostics[0]["message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains(&sha[..12]),
        "the message names the commit: {message}"
    );
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_trusted_keys_are_served() {
    let keys = Keys::make();
    let allowed = keys.path("allowed_signers");
    let trusted = keys.path("trusted.asc");
    let gitops = GitOpsServer::start(
        "example-repo",
        &[
            "--verify-signatures",
            "--allowed-signers",
            allowed.to_str().expect("utf-8 path"),
            "--trusted-gpg-keys",
            trusted.to_str().expect("utf-8 path"),
        ],
    );
    let work = gitops.fixture.work();
    let server = &gitops.server;

    // The fixture's first commit is unsigned: nothing is served.
    let first = support::git(&work, &["rev-parse", "HEAD"]);
    let why = rejected(server, &first, None).await;
    assert!(why.contains("it is not signed"), "{why}");
    let ready = reqwest::get(server.api_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 503, "nothing is served yet");

    // Signed by alice's SSH key, which --allowed-signers lists: served.
    gitops.fixture.set_team("signed-by-alice");
    let alice = keys.commit_ssh(&work, "alice", "signed by alice");
    announce(&gitops, false).await;
    served(server, &alice).await;

    // Signed by mallory's SSH key, in no list: rejected, alice's keeps serving.
    gitops.fixture.set_team("signed-by-mallory");
    let mallory = keys.commit_ssh(&work, "mallory", "signed by mallory");
    announce(&gitops, false).await;
    let why = rejected(server, &mallory, Some(&alice)).await;
    let mallory_key = run(
        "ssh-keygen",
        keys.dir.path(),
        &[],
        &["-l", "-f", "mallory.pub"],
    );
    let mallory_fp = mallory_key.split_whitespace().nth(1).expect("fingerprint");
    assert!(
        why.contains(mallory_fp) && why.contains("not in --allowed-signers or --trusted-gpg-keys"),
        "names the key and the lists: {why}"
    );

    // Signed by bob's OpenPGP key, which --trusted-gpg-keys holds: served.
    gitops.fixture.set_team("signed-by-bob");
    let bob = keys.commit_gpg(&work, "signed by bob");
    announce(&gitops, false).await;
    served(server, &bob).await;

    // Tampered: bob's signed commit with its message changed after signing, force-pushed.
    let object = run("git", &work, &[], &["cat-file", "commit", "HEAD"]);
    let forged_text = object.replace("signed by bob", "signed by bob, honest");
    assert_ne!(object, forged_text);
    let forged_file = keys.path("forged-commit");
    std::fs::write(&forged_file, format!("{forged_text}\n")).expect("write forged commit");
    let forged = run(
        "git",
        &work,
        &[],
        &[
            "hash-object",
            "-t",
            "commit",
            "-w",
            forged_file.to_str().expect("utf-8 path"),
        ],
    );
    run("git", &work, &[], &["reset", "-q", "--hard", &forged]);
    announce(&gitops, true).await;
    let why = rejected(server, &forged, Some(&bob)).await;
    assert!(why.contains("is bad"), "{why}");

    // A force-push to an unsigned commit: rejected, bob's keeps serving.
    run("git", &work, &[], &["reset", "-q", "--hard", &alice]);
    gitops.fixture.set_team("unsigned");
    let unsigned = gitops.fixture.commit_all("unsigned, force-pushed");
    announce(&gitops, true).await;
    let why = rejected(server, &unsigned, Some(&bob)).await;
    assert!(why.contains("it is not signed"), "{why}");

    // The event (what a notification sends) names the commit and the key.
    let events = get_json(&server.api_url("/api/v1/events?kind=revision-rejected")).await;
    assert!(
        events["items"].as_array().unwrap().iter().any(|e| {
            let m = e["message"].as_str().unwrap_or("");
            m.contains(&mallory) && m.contains("E041") && m.contains(mallory_fp)
        }),
        "{events}"
    );

    // The rejections are in the history and the events too.
    let revisions = get_json(&server.api_url("/api/v1/revisions")).await;
    for sha in [&first, &mallory, &forged, &unsigned] {
        assert!(
            revisions.to_string().contains(sha.as_str()),
            "{sha}: {revisions}"
        );
    }
}

#[test]
fn verify_signatures_refuses_bad_settings_before_starting() {
    let keys = tempfile::tempdir().expect("tempdir");
    let data = keys.path().join("data");
    let gitamp = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gitamp"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("GITAMP_REPO")
            .output()
            .expect("gitamp runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let repo = "file:///nonexistent/remote.git";
    let (code, err) = gitamp(&["--repo", repo, "--verify-signatures"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--verify-signatures needs the trusted keys"),
        "{err}"
    );

    let (code, err) = gitamp(&["--repo", repo, "--allowed-signers", "/nonexistent"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("take effect with --verify-signatures"),
        "{err}"
    );

    let (code, err) = gitamp(&["--verify-signatures", "--allowed-signers", "/nonexistent"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs a Git --repo"), "{err}");

    let (code, err) = gitamp(&[
        "--repo",
        repo,
        "--verify-signatures",
        "--allowed-signers",
        "/nonexistent/allowed_signers",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--allowed-signers: reading /nonexistent/allowed_signers"),
        "{err}"
    );
    assert!(
        !data.exists(),
        "nothing is created before the settings are checked"
    );
}
