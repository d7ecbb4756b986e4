//! Packages on the wire: the offer that goes out (`PackagesAvailable`, encoded once and shared
//! like a [`RemoteConfig`](crate::wire::RemoteConfig)) and what agents report back
//! (`PackageStatuses`, as plain data). What to offer and when is the plan's business; this
//! layer only carries it.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use serde::Serialize;

use crate::proto;
use crate::ser::ser_hex;

/// Packages kept from one report: an agent may report many, the server follows one.
pub const MAX_REPORTED_PACKAGES: usize = 16;
/// Longest error text kept per package (the rest is cut, marked with `…`).
pub const MAX_ERROR_LEN: usize = 2048;

/// One top-level package offered to agents: everything `PackagesAvailable` carries.
#[derive(Debug)]
pub struct PackageOffer {
    all_hash: [u8; 32],
    name: String,
    version: String,
    /// `ServerToAgent.packages_available` as encoded field bytes (tag 5 + length + body).
    encoded_field: Bytes,
}

/// The parts of an offer, as the caller derived them.
#[derive(Debug, Clone)]
pub struct OfferParts<'a> {
    /// Package name (the map key and what the agent reports under).
    pub name: &'a str,
    /// `PackageAvailable.version`.
    pub version: &'a str,
    /// `DownloadableFile.download_url`.
    pub url: &'a str,
    /// `DownloadableFile.content_hash`: the file's SHA-256.
    pub content_hash: [u8; 32],
    /// `DownloadableFile.signature`, if any.
    pub signature: Option<&'a [u8]>,
    /// `PackageAvailable.hash`.
    pub package_hash: [u8; 32],
    /// `PackagesAvailable.all_packages_hash`.
    pub all_hash: [u8; 32],
}

impl PackageOffer {
    /// Encode the offer once.
    pub fn new(p: OfferParts<'_>) -> PackageOffer {
        let available = proto::PackagesAvailable {
            packages: BTreeMap::from([(
                p.name.to_string(),
                proto::PackageAvailable {
                    r#type: proto::PackageType::TopLevel as i32,
                    version: p.version.to_string(),
                    file: Some(proto::DownloadableFile {
                        download_url: p.url.to_string(),
                        content_hash: Bytes::copy_from_slice(&p.content_hash),
                        signature: p.signature.map(Bytes::copy_from_slice).unwrap_or_default(),
                        headers: None,
                    }),
                    hash: Bytes::copy_from_slice(&p.package_hash),
                },
            )]),
            all_packages_hash: Bytes::copy_from_slice(&p.all_hash),
        };
        let holder = proto::ServerToAgent {
            packages_available: Some(available),
            ..Default::default()
        };
        PackageOffer {
            all_hash: p.all_hash,
            name: p.name.to_string(),
            version: p.version.to_string(),
            encoded_field: Bytes::from(holder.encode_to_vec()),
        }
    }

    /// The `all_packages_hash`, which identifies the offer.
    pub fn all_hash(&self) -> &[u8; 32] {
        &self.all_hash
    }

    /// The package name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version offered.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cached encoding of `ServerToAgent.packages_available`.
    pub fn encoded_field(&self) -> &Bytes {
        &self.encoded_field
    }
}

/// `PackageStatusEnum`, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageStatusKind {
    /// Installed (0).
    Installed,
    /// InstallPending (1).
    InstallPending,
    /// Installing (2).
    Installing,
    /// InstallFailed (3).
    InstallFailed,
    /// Downloading (4).
    Downloading,
    /// A value this server does not know.
    Unknown,
}

impl From<i32> for PackageStatusKind {
    fn from(v: i32) -> Self {
        match proto::PackageStatusEnum::try_from(v) {
            Ok(proto::PackageStatusEnum::Installed) => PackageStatusKind::Installed,
            Ok(proto::PackageStatusEnum::InstallPending) => PackageStatusKind::InstallPending,
            Ok(proto::PackageStatusEnum::Installing) => PackageStatusKind::Installing,
            Ok(proto::PackageStatusEnum::InstallFailed) => PackageStatusKind::InstallFailed,
            Ok(proto::PackageStatusEnum::Downloading) => PackageStatusKind::Downloading,
            Err(_) => PackageStatusKind::Unknown,
        }
    }
}

/// One package of a `PackageStatuses` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageEntry {
    /// `agent_has_version`.
    pub has_version: String,
    /// `agent_has_hash` (hex when serialized).
    #[serde(serialize_with = "ser_hex")]
    pub has_hash: Bytes,
    /// `server_offered_version`.
    pub offered_version: String,
    /// `server_offered_hash` (hex when serialized).
    #[serde(serialize_with = "ser_hex")]
    pub offered_hash: Bytes,
    /// `status`.
    pub status: PackageStatusKind,
    /// `error_message` (bounded by [`MAX_ERROR_LEN`]).
    pub error: String,
}

/// An agent's `PackageStatuses`, bounded and copied out of the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageReport {
    /// `server_provided_all_packages_hash`: the offer it worked on (hex when serialized).
    #[serde(serialize_with = "ser_hex")]
    pub all_hash: Bytes,
    /// Packages by name (at most [`MAX_REPORTED_PACKAGES`], first by name).
    pub packages: BTreeMap<String, PackageEntry>,
    /// `error_message` of the whole report.
    pub error: String,
}

fn bounded(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl PackageReport {
    /// Copy a report out of the message (never a slice of it), bounded.
    pub fn of(s: &proto::PackageStatuses) -> PackageReport {
        PackageReport {
            all_hash: Bytes::copy_from_slice(&s.server_provided_all_packages_hash),
            packages: s
                .packages
                .iter()
                .take(MAX_REPORTED_PACKAGES)
                .map(|(name, p)| {
                    (
                        name.clone(),
                        PackageEntry {
                            has_version: p.agent_has_version.clone(),
                            has_hash: Bytes::copy_from_slice(&p.agent_has_hash),
                            offered_version: p.server_offered_version.clone(),
                            offered_hash: Bytes::copy_from_slice(&p.server_offered_hash),
                            status: PackageStatusKind::from(p.status),
                            error: bounded(&p.error_message),
                        },
                    )
                })
                .collect(),
            error: bounded(&s.error_message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Outgoing;

    #[test]
    fn offer_round_trips_in_a_reply() {
        let offer = std::sync::Arc::new(PackageOffer::new(OfferParts {
            name: "collector",
            version: "0.158.0",
            url: "http://127.0.0.1:1/p",
            content_hash: [7; 32],
            signature: None,
            package_hash: [8; 32],
            all_hash: [9; 32],
        }));
        let out = Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::from_static(&[1; 16]),
                ..Default::default()
            },
            remote_config: None,
            packages: Some(offer),
        };
        // A WebSocket frame carries it too (after the one-byte header).
        let frame = crate::outbox::Push::frame(&out).to_bytes();
        let ws = proto::ServerToAgent::decode(&frame[1..]).expect("decodes");
        assert!(ws.packages_available.is_some());
        let back = proto::ServerToAgent::decode(out.encode()).expect("decodes");
        let pa = back.packages_available.expect("packages_available");
        assert_eq!(&pa.all_packages_hash[..], &[9; 32]);
        let p = &pa.packages["collector"];
        assert_eq!(p.version, "0.158.0");
        let file = p.file.as_ref().expect("file");
        assert_eq!(&file.content_hash[..], &[7; 32]);
        assert_eq!(file.download_url, "http://127.0.0.1:1/p");
        assert_eq!(out.encoded_len(), out.encode().len());
    }

    #[test]
    fn report_is_bounded() {
        let mut s = proto::PackageStatuses::default();
        for i in 0..100 {
            s.packages.insert(
                format!("p{i:03}"),
                proto::PackageStatus {
                    error_message: "x".repeat(10_000),
                    status: 3,
                    ..Default::default()
                },
            );
        }
        let r = PackageReport::of(&s);
        assert_eq!(r.packages.len(), MAX_REPORTED_PACKAGES);
        let e = &r.packages["p000"];
        assert_eq!(e.status, PackageStatusKind::InstallFailed);
        assert!(e.error.len() <= MAX_ERROR_LEN + '…'.len_utf8());
    }
}
