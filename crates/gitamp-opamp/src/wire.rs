//! The OpAMP wire below the registry: what goes out to agents, encoded once.
//!
//! A [`RemoteConfig`] is encoded once per revision and shared by every agent that gets it;
//! an [`Outgoing`] is one `ServerToAgent` (per-agent fields plus, optionally, those shared
//! bytes). Nothing here knows of agents' state: the registry (`fleet`) and the connection
//! queues (`outbox`) build on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::packages::PackageOffer;
use crate::proto;
use crate::telemetry;

/// A 16-byte agent instance UID.
pub type Uid = [u8; 16];

/// Canonical UUID text of a UID, for logs and serialization.
pub fn uid_text(uid: &Uid) -> String {
    uuid::Uuid::from_bytes(*uid).hyphenated().to_string()
}

/// A UID from its plain lower-case hex, as the stores keep it (`None`: not 16 bytes of hex).
pub fn uid_from_hex(text: &str) -> Option<Uid> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Capabilities this server announces on every reply.
pub const SERVER_CAPABILITIES: u64 = proto::ServerCapabilities::AcceptsStatus as u64
    | proto::ServerCapabilities::OffersRemoteConfig as u64
    | proto::ServerCapabilities::AcceptsEffectiveConfig as u64
    | proto::ServerCapabilities::OffersPackages as u64
    | proto::ServerCapabilities::AcceptsPackagesStatus as u64
    | proto::ServerCapabilities::OffersConnectionSettings as u64;

/// A remote configuration (`AgentRemoteConfig`) for one or more agents.
///
/// The `AgentRemoteConfig` message is encoded once, as a complete `ServerToAgent`
/// field 3 (tag, length and body), and shared by every agent that gets it: protobuf
/// messages concatenate, so a reply is the per-agent fields followed by these bytes.
#[derive(Debug)]
pub struct RemoteConfig {
    hash: [u8; 32],
    files: BTreeMap<String, (Bytes, String)>,
    /// `ServerToAgent.remote_config` as encoded field bytes (tag 3 + length + body).
    encoded_field: Bytes,
}

impl RemoteConfig {
    /// A config of one YAML file under the empty name, for tests.
    #[cfg(test)]
    pub(crate) fn one_yaml_file(body: Bytes, hash: [u8; 32]) -> Arc<RemoteConfig> {
        let files = BTreeMap::from([(String::new(), (body, "text/yaml".to_owned()))]);
        Arc::new(RemoteConfig::new(files, hash))
    }

    /// The served bytes of file `name` if they equal `body`, to share instead of a copy.
    /// Bytes that already are the served ones are recognised without comparing them.
    pub(crate) fn same_body(&self, name: &str, body: &[u8]) -> Option<Bytes> {
        self.files
            .get(name)
            .filter(|(served, _)| {
                (served.as_ptr() == body.as_ptr() && served.len() == body.len())
                    || served[..] == *body
            })
            .map(|(served, _)| served.clone())
    }

    /// Builds the config and encodes its `AgentRemoteConfig` once.
    /// `config_map` maps config file names to `(body, content type)`; `hash` is the
    /// caller's deterministic hash of the whole map (gitamp's is `gitamp_core::ConfigHash::of`;
    /// it is never empty by type).
    pub fn new(config_map: BTreeMap<String, (Bytes, String)>, hash: [u8; 32]) -> Self {
        let remote = proto::AgentRemoteConfig {
            config: Some(proto::AgentConfigMap {
                config_map: config_map
                    .iter()
                    .map(|(k, (body, ct))| {
                        (
                            k.clone(),
                            proto::AgentConfigFile {
                                body: body.clone(),
                                content_type: ct.clone(),
                            },
                        )
                    })
                    .collect(),
            }),
            config_hash: Bytes::copy_from_slice(&hash),
        };
        let holder = proto::ServerToAgent {
            remote_config: Some(remote),
            ..Default::default()
        };
        let encoded_field = Bytes::from(holder.encode_to_vec());
        Self {
            hash,
            files: config_map,
            encoded_field,
        }
    }

    /// The config hash sent as `config_hash`.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The config files `(body, content type)` by name.
    pub fn files(&self) -> &BTreeMap<String, (Bytes, String)> {
        &self.files
    }

    /// The cached encoding of `ServerToAgent.remote_config` (tag + length + body).
    pub fn encoded_field(&self) -> &Bytes {
        &self.encoded_field
    }
}

/// A `ServerToAgent` to send: per-agent fields plus, optionally, the shared
/// remote config bytes appended without re-encoding.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Per-agent fields (its `remote_config` is always `None`).
    pub msg: proto::ServerToAgent,
    /// Shared config, appended as encoded bytes.
    pub remote_config: Option<Arc<RemoteConfig>>,
    /// Shared package offer (`packages_available`), appended as encoded bytes.
    pub packages: Option<Arc<PackageOffer>>,
}

impl Outgoing {
    /// A message the server pushes unasked on a WebSocket: `msg` (its `instance_uid` and
    /// `capabilities` set here) with nothing shared appended yet.
    pub fn push(uid: &Uid, msg: proto::ServerToAgent) -> Outgoing {
        Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::copy_from_slice(uid),
                capabilities: SERVER_CAPABILITIES,
                ..msg
            },
            remote_config: None,
            packages: None,
        }
    }

    /// Encoded length of the full message.
    pub fn encoded_len(&self) -> usize {
        self.msg.encoded_len()
            + self
                .remote_config
                .as_ref()
                .map_or(0, |d| d.encoded_field.len())
            + self
                .packages
                .as_ref()
                .map_or(0, |p| p.encoded_field().len())
    }

    /// Encodes the message, prefixed with `prefix` (the WS header, or nothing).
    pub fn encode_with_prefix(&self, prefix: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(prefix.len() + self.encoded_len());
        buf.extend_from_slice(prefix);
        self.msg.encode_raw(&mut buf);
        if let Some(d) = &self.remote_config {
            buf.extend_from_slice(&d.encoded_field);
        }
        if let Some(p) = &self.packages {
            buf.extend_from_slice(p.encoded_field());
        }
        buf.freeze()
    }

    /// Encodes the message (HTTP body).
    pub fn encode(&self) -> Bytes {
        self.encode_with_prefix(&[])
    }

    /// Encodes one WebSocket frame (header 0 then the message).
    pub fn encode_frame(&self) -> Bytes {
        self.encode_with_prefix(&[crate::frame::HEADER])
    }

    /// Makes the message fit `limit` bytes (plus `prefix_len`): a reply must still go
    /// out when the config does not fit, so the remote config is dropped first (and the
    /// drop is logged and counted). Returns false if even the rest does not fit.
    pub fn fit(&mut self, limit: usize, prefix_len: usize) -> bool {
        if self.encoded_len() + prefix_len <= limit {
            return true;
        }
        telemetry::oversize_outgoing();
        tracing::warn!(
            len = self.encoded_len() + prefix_len,
            limit,
            "ServerToAgent over the size limit: remote config and package offer dropped"
        );
        self.remote_config = None;
        self.packages = None;
        self.encoded_len() + prefix_len <= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_field_concatenates() {
        let d = RemoteConfig::one_yaml_file(Bytes::from_static(b"receivers: {}"), [9; 32]);
        let out = Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::from_static(&[1; 16]),
                capabilities: SERVER_CAPABILITIES,
                ..Default::default()
            },
            remote_config: Some(d),
            packages: None,
        };
        let back = proto::ServerToAgent::decode(out.encode()).unwrap();
        let rc = back.remote_config.unwrap();
        assert_eq!(&rc.config_hash[..], &[9; 32]);
        assert_eq!(
            &rc.config.unwrap().config_map[""].body[..],
            b"receivers: {}"
        );
        assert_eq!(&back.instance_uid[..], &[1; 16]);
        assert_eq!(out.encode_frame().len(), out.encoded_len() + 1);
    }
}
