//! Webhook verification vectors: GitHub HMAC (its published test vector), GitLab token,
//! generic bearer; ref filtering, ping, malformed input.

use axum::http::{HeaderMap, HeaderValue};
use gitamp::source::webhook::{
    MAX_BODY_BYTES, WebhookError, WebhookKind, WebhookOutcome, verify_and_parse,
    verify_github_signature,
};

mod support;

use support::server::github_signature as sign;

/// From GitHub's "Validating webhook deliveries" documentation.
const GH_SECRET: &[u8] = b"It's a Secret to Everybody";
const GH_PAYLOAD: &[u8] = b"Hello, World!";
const GH_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn push_body(git_ref: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "repository": { "full_name": "org/cfg" }
    }))
    .unwrap()
}

#[test]
fn github_published_test_vector() {
    verify_github_signature(GH_SECRET, GH_PAYLOAD, GH_SIGNATURE.as_bytes()).unwrap();
    assert_eq!(sign(GH_SECRET, GH_PAYLOAD), GH_SIGNATURE);
    assert!(matches!(
        verify_github_signature(b"another secret", GH_PAYLOAD, GH_SIGNATURE.as_bytes()),
        Err(WebhookError::Unauthorized(_))
    ));
    assert!(matches!(
        verify_github_signature(GH_SECRET, b"Hello, World?", GH_SIGNATURE.as_bytes()),
        Err(WebhookError::Unauthorized(_))
    ));
    // sha1 header format or garbage.
    assert!(verify_github_signature(GH_SECRET, GH_PAYLOAD, b"sha1=abcd").is_err());
    assert!(verify_github_signature(GH_SECRET, GH_PAYLOAD, b"sha256=zz").is_err());
}

#[test]
fn github_push_on_tracked_ref_wakes() {
    let body = push_body("refs/heads/main");
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(GH_SECRET, &body)),
    ]);
    let out = verify_and_parse(WebhookKind::GitHub, &h, &body, GH_SECRET, Some("main")).unwrap();
    assert_eq!(
        out,
        WebhookOutcome::Wake {
            git_ref: Some("refs/heads/main".into()),
            after: Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".into()),
        }
    );
    // Full ref names and the default branch (None) also wake.
    assert!(matches!(
        verify_and_parse(
            WebhookKind::GitHub,
            &h,
            &body,
            GH_SECRET,
            Some("refs/heads/main")
        ),
        Ok(WebhookOutcome::Wake { .. })
    ));
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, &body, GH_SECRET, None),
        Ok(WebhookOutcome::Wake { .. })
    ));
}

#[test]
fn github_other_ref_is_ignored() {
    let body = push_body("refs/heads/feature");
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(GH_SECRET, &body)),
    ]);
    let out = verify_and_parse(WebhookKind::GitHub, &h, &body, GH_SECRET, Some("main")).unwrap();
    assert!(matches!(out, WebhookOutcome::Ignored { .. }), "{out:?}");
    // Tags: tracked tag wakes, other tag is ignored.
    let body = push_body("refs/tags/v2");
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(GH_SECRET, &body)),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, &body, GH_SECRET, Some("v2")),
        Ok(WebhookOutcome::Wake { .. })
    ));
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, &body, GH_SECRET, Some("v1")),
        Ok(WebhookOutcome::Ignored { .. })
    ));
}

#[test]
fn github_wrong_or_missing_signature_is_unauthorized() {
    let body = push_body("refs/heads/main");
    let wrong = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(b"not the secret", &body)),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &wrong, &body, GH_SECRET, Some("main")),
        Err(WebhookError::Unauthorized(_))
    ));
    let missing = headers(&[("x-github-event", "push")]);
    assert!(matches!(
        verify_and_parse(
            WebhookKind::GitHub,
            &missing,
            &body,
            GH_SECRET,
            Some("main")
        ),
        Err(WebhookError::Unauthorized(_))
    ));
    // An empty configured secret never authenticates anything.
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(b"", &body)),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, &body, b"", Some("main")),
        Err(WebhookError::Unauthorized(_))
    ));
}

#[test]
fn github_ping_other_events_and_bad_json() {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let h = headers(&[
        ("x-github-event", "ping"),
        ("x-hub-signature-256", &sign(GH_SECRET, body)),
    ]);
    assert_eq!(
        verify_and_parse(WebhookKind::GitHub, &h, body, GH_SECRET, Some("main")).unwrap(),
        WebhookOutcome::Pong
    );
    let h = headers(&[
        ("x-github-event", "issues"),
        ("x-hub-signature-256", &sign(GH_SECRET, body)),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, body, GH_SECRET, Some("main")),
        Ok(WebhookOutcome::Ignored { .. })
    ));
    let garbage = b"not json";
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(GH_SECRET, garbage)),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, garbage, GH_SECRET, Some("main")),
        Err(WebhookError::BadRequest(_))
    ));
    let h = headers(&[("x-hub-signature-256", &sign(GH_SECRET, body))]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitHub, &h, body, GH_SECRET, Some("main")),
        Err(WebhookError::BadRequest(_))
    ));
}

#[test]
fn gitlab_token() {
    let secret = b"gl-secret";
    let body = push_body("refs/heads/main");
    let ok = headers(&[
        ("x-gitlab-token", "gl-secret"),
        ("x-gitlab-event", "Push Hook"),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitLab, &ok, &body, secret, Some("main")),
        Ok(WebhookOutcome::Wake { .. })
    ));
    let tag_body = push_body("refs/tags/v1");
    let tag = headers(&[
        ("x-gitlab-token", "gl-secret"),
        ("x-gitlab-event", "Tag Push Hook"),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitLab, &tag, &tag_body, secret, Some("v1")),
        Ok(WebhookOutcome::Wake { .. })
    ));
    assert!(matches!(
        verify_and_parse(WebhookKind::GitLab, &ok, &body, secret, Some("dev")),
        Ok(WebhookOutcome::Ignored { .. })
    ));
    let mr = headers(&[
        ("x-gitlab-token", "gl-secret"),
        ("x-gitlab-event", "Merge Request Hook"),
    ]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitLab, &mr, &body, secret, Some("main")),
        Ok(WebhookOutcome::Ignored { .. })
    ));
    for bad in ["gl-secreT", "gl-secret2", ""] {
        let h = headers(&[("x-gitlab-token", bad), ("x-gitlab-event", "Push Hook")]);
        assert!(matches!(
            verify_and_parse(WebhookKind::GitLab, &h, &body, secret, Some("main")),
            Err(WebhookError::Unauthorized(_))
        ));
    }
    let none = headers(&[("x-gitlab-event", "Push Hook")]);
    assert!(matches!(
        verify_and_parse(WebhookKind::GitLab, &none, &body, secret, Some("main")),
        Err(WebhookError::Unauthorized(_))
    ));
}

#[test]
fn generic_bearer() {
    let secret = b"tok-123";
    let h = headers(&[("authorization", "Bearer tok-123")]);
    assert_eq!(
        verify_and_parse(WebhookKind::Generic, &h, b"", secret, Some("main")).unwrap(),
        WebhookOutcome::Wake {
            git_ref: None,
            after: None
        }
    );
    let body = push_body("refs/heads/other");
    assert!(matches!(
        verify_and_parse(WebhookKind::Generic, &h, &body, secret, Some("main")),
        Ok(WebhookOutcome::Ignored { .. })
    ));
    for bad in ["Bearer tok-124", "Basic dG9rLTEyMw==", "tok-123"] {
        let h = headers(&[("authorization", bad)]);
        assert!(matches!(
            verify_and_parse(WebhookKind::Generic, &h, b"", secret, None),
            Err(WebhookError::Unauthorized(_))
        ));
    }
    // The lookup trait also works on plain pairs.
    let pairs: &[(&str, &str)] = &[("Authorization", "bearer tok-123")];
    assert!(verify_and_parse(WebhookKind::Generic, pairs, b"", secret, None).is_ok());
}

#[test]
fn oversized_body_is_rejected() {
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let h = headers(&[("authorization", "Bearer t")]);
    assert!(matches!(
        verify_and_parse(WebhookKind::Generic, &h, &body, b"t", None),
        Err(WebhookError::BadRequest(_))
    ));
}
