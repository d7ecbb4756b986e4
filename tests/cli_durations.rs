//! Duration flags on the command line: the forms are in the help, a bad value is a usage error
//! that names the flag and the forms. (The parser itself is unit-tested in gitamp-core.)

use std::process::Command;

fn gitamp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gitamp"))
        .args(args)
        // The environment must not supply the flags under test.
        .env_remove("GITAMP_POLL")
        .env_remove("GITAMP_HEARTBEAT")
        .env_remove("GITAMP_OTELCOL_TIMEOUT")
        .output()
        .expect("running gitamp")
}

#[test]
fn serve_help_shows_the_duration_forms() {
    let out = gitamp(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--poll <DURATION>"), "{help}");
    assert!(help.contains("1h30m"), "{help}");
    assert!(help.contains("[default: 30s]"), "{help}");
}

#[test]
fn a_bad_duration_is_a_usage_error_naming_the_flag_and_the_forms() {
    for (args, flag) in [
        (&["serve", "--poll", "5x"][..], "--poll"),
        (&["serve", "--heartbeat", "0"][..], "--heartbeat"),
        (
            &["validate", "--otelcol-timeout=-3s", "."][..],
            "--otelcol-timeout",
        ),
    ] {
        let out = gitamp(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(
            stderr.contains("30s, 1m, 500ms, 1h30m"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn an_environment_variable_takes_the_same_forms() {
    let out = Command::new(env!("CARGO_BIN_EXE_gitamp"))
        .args(["serve"])
        .env("GITAMP_POLL", "soon")
        .output()
        .expect("running gitamp");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--poll"), "{stderr}");
}
