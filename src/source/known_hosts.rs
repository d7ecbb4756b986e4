//! A small OpenSSH `known_hosts` reader for SSH host-key checks.
//!
//! libgit2 only consults `~/.ssh/known_hosts`, which containers rarely have; gitamp takes a
//! `--known-hosts` file and checks the server's key itself in the certificate callback. Plain
//! and hashed (`|1|salt|hash`) host patterns, `[host]:port`, `*`/`?` wildcards, `!` negation
//! and `@revoked` are understood. A key marked `@revoked` for the host is refused whatever
//! else the file says, wherever its line is (as OpenSSH does): a plain line listing the same
//! key does not bring it back. `@cert-authority` lines are ignored: gitamp does not do host
//! certificates, and a CA's key is never taken as the host's own key, so a host known only
//! through a CA is unknown (refused).
//!
//! Hand-written rather than the `ssh-key` crate's `known_hosts` parser: that crate is not in
//! this build's offline registry cache, its release (0.6) is on the previous RustCrypto
//! generation (hmac 0.12 beside our 0.13, plus rsa and the NIST curves in the lock file), and
//! it only splits lines: host matching (wildcards, negation, hashed names, ports) and the
//! revocation rule would still be ours.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{KeyInit, Mac};

/// What the file says about a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line for this host lists exactly this key.
    Match,
    /// The host is listed, but with other keys: a possible man in the middle.
    Mismatch,
    /// The host is not listed.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
}

#[derive(Debug, thiserror::Error)]
#[error("reading known_hosts file {path}: {source}")]
pub struct KnownHostsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    patterns: Vec<String>,
    key: Vec<u8>,
}

/// A parsed known_hosts file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    pub fn load(path: &Path) -> Result<KnownHosts, KnownHostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownHostsError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(KnownHosts::parse(&text))
    }

    /// Lines that cannot be understood are skipped, as OpenSSH does.
    pub fn parse(text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or("");
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    // `@cert-authority` (host certificates are not supported) and unknown
                    // markers: never a host's own key.
                    _ => continue,
                }
                first = fields.next().unwrap_or("");
            }
            let (Some(_key_type), Some(key_b64)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key_b64) else {
                continue;
            };
            entries.push(Entry {
                revoked,
                patterns: first.split(',').map(str::to_string).collect(),
                key,
            });
        }
        KnownHosts { entries }
    }

    /// Check `key` (the raw SSH wire-format public key) for `host` reached on `port`.
    ///
    /// Every line for the host is read before answering: a `@revoked` line for this key wins
    /// over any plain line, before or after it, so that revoking a key needs one added line
    /// and no hunt for the old ones.
    pub fn check(&self, host: &str, port: Option<u16>, key: &[u8]) -> HostKeyStatus {
        // OpenSSH writes (and hashes) host names in lower case, and the port only when not 22.
        let name = match port {
            Some(p) if p != 22 => format!("[{host}]:{p}"),
            _ => host.to_string(),
        }
        .to_ascii_lowercase();
        let mut status = HostKeyStatus::Unknown;
        for entry in &self.entries {
            if !patterns_match(&entry.patterns, &name) {
                continue;
            }
            if entry.revoked {
                if entry.key == key {
                    return HostKeyStatus::Revoked;
                }
            } else if entry.key == key {
                status = HostKeyStatus::Match;
            } else if status == HostKeyStatus::Unknown {
                status = HostKeyStatus::Mismatch;
            }
        }
        status
    }
}

/// OpenSSH semantics: any negated match rejects the line; otherwise one positive match is needed.
fn patterns_match(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if pattern_matches(neg, name) {
                return false;
            }
        } else if pattern_matches(p, name) {
            matched = true;
        }
    }
    matched
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        return hashed_matches(hashed, name);
    }
    glob_match(
        pattern.to_ascii_lowercase().as_bytes(),
        name.to_ascii_lowercase().as_bytes(),
    )
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt_b64, hash_b64)) = hashed.split_once('|') else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (engine.decode(salt_b64), engine.decode(hash_b64)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBBBBnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn plain_wildcard_port_and_negation() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\
             github.com,140.82.112.3 ssh-ed25519 {KEY_A}\n\
             [git.internal]:2222 ssh-ed25519 {KEY_B}\n\
             *.corp,!bad.corp ssh-ed25519 {KEY_A}\n\
             garbage line\n"
        ));
        assert_eq!(
            kh.check("github.com", None, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check("GitHub.com", Some(22), &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check("github.com", None, &key(KEY_B)),
            HostKeyStatus::Mismatch
        );
        assert_eq!(
            kh.check("gitlab.com", None, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            kh.check("git.internal", Some(2222), &key(KEY_B)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check("git.internal", None, &key(KEY_B)),
            HostKeyStatus::Unknown
        );
        assert_eq!(kh.check("x.corp", None, &key(KEY_A)), HostKeyStatus::Match);
        assert_eq!(
            kh.check("bad.corp", None, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
    }

    /// A hashed host field, made the way OpenSSH does: HMAC-SHA1 keyed by a salt over the name.
    fn hashed(name: &str) -> String {
        let salt = b"0123456789abcdef0123";
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        let e = base64::engine::general_purpose::STANDARD;
        format!(
            "|1|{}|{}",
            e.encode(salt),
            e.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn revoked_wins_before_or_after_a_plain_line() {
        for file in [
            format!("github.com ssh-ed25519 {KEY_A}\n@revoked github.com ssh-ed25519 {KEY_A}\n"),
            format!("@revoked github.com ssh-ed25519 {KEY_A}\ngithub.com ssh-ed25519 {KEY_A}\n"),
            format!("github.com ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_A}\n"),
        ] {
            let kh = KnownHosts::parse(&file);
            assert_eq!(
                kh.check("github.com", None, &key(KEY_A)),
                HostKeyStatus::Revoked,
                "{file}"
            );
            // Another key of the host is not revoked: it is just not listed.
            assert_eq!(
                kh.check("github.com", None, &key(KEY_B)),
                HostKeyStatus::Mismatch,
                "{file}"
            );
        }
        // A revocation for another host leaves this one alone.
        let kh = KnownHosts::parse(&format!(
            "github.com ssh-ed25519 {KEY_A}\n@revoked gitlab.com ssh-ed25519 {KEY_A}\n"
        ));
        assert_eq!(
            kh.check("github.com", None, &key(KEY_A)),
            HostKeyStatus::Match
        );
    }

    #[test]
    fn revoked_with_hashed_hosts_ports_negation_and_wildcards() {
        let kh = KnownHosts::parse(&format!(
            "{h} ssh-ed25519 {KEY_A}\n\
             @revoked {h} ssh-ed25519 {KEY_A}\n\
             {hp} ssh-ed25519 {KEY_B}\n\
             git.internal ssh-ed25519 {KEY_A}\n\
             [git.internal]:2222 ssh-ed25519 {KEY_A}\n\
             @revoked [git.internal]:2222 ssh-ed25519 {KEY_A}\n\
             *.corp ssh-ed25519 {KEY_B}\n\
             @revoked *.corp,!good.corp ssh-ed25519 {KEY_B}\n",
            h = hashed("example.org"),
            hp = hashed("[example.org]:2222"),
        ));
        // Hashed: the revoked line is found by the same hash; host names compare in lower case.
        assert_eq!(
            kh.check("Example.org", None, &key(KEY_A)),
            HostKeyStatus::Revoked
        );
        assert_eq!(
            kh.check("example.org", Some(2222), &key(KEY_B)),
            HostKeyStatus::Match
        );
        // Ports: `[host]:2222` is revoked, the same host on 22 is not.
        assert_eq!(
            kh.check("git.internal", Some(2222), &key(KEY_A)),
            HostKeyStatus::Revoked
        );
        assert_eq!(
            kh.check("git.internal", Some(22), &key(KEY_A)),
            HostKeyStatus::Match
        );
        // Wildcard revocation, with a negated host it does not reach.
        assert_eq!(
            kh.check("x.corp", None, &key(KEY_B)),
            HostKeyStatus::Revoked
        );
        assert_eq!(
            kh.check("good.corp", None, &key(KEY_B)),
            HostKeyStatus::Match
        );
    }

    #[test]
    fn cert_authority_lines_are_ignored() {
        // gitamp does not do host certificates: a CA's key is not the host's key.
        let kh = KnownHosts::parse(&format!("@cert-authority *.corp ssh-ed25519 {KEY_A}\n"));
        assert_eq!(
            kh.check("x.corp", None, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
        let kh = KnownHosts::parse(&format!(
            "@cert-authority *.corp ssh-ed25519 {KEY_A}\nx.corp ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(
            kh.check("x.corp", None, &key(KEY_A)),
            HostKeyStatus::Mismatch
        );
        assert_eq!(kh.check("x.corp", None, &key(KEY_B)), HostKeyStatus::Match);
    }

    #[test]
    fn hashed_and_revoked() {
        // Made the way OpenSSH does: HMAC-SHA1 keyed by a random salt over the host name.
        let salt = b"0123456789abcdef0123";
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"example.org");
        let hash = mac.finalize().into_bytes();
        let e = base64::engine::general_purpose::STANDARD;
        let kh = KnownHosts::parse(&format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n",
            e.encode(salt),
            e.encode(hash)
        ));
        assert_eq!(
            kh.check("example.org", None, &key(KEY_A)),
            HostKeyStatus::Match
        );
        assert_eq!(
            kh.check("example.net", None, &key(KEY_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            kh.check("example.org", None, &key(KEY_B)),
            HostKeyStatus::Revoked
        );
    }
}
