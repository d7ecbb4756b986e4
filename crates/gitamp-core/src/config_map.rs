//! What an agent receives: the OpAMP config map and its hash.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Content type of rendered collector configuration.
pub const YAML_CONTENT_TYPE: &str = "text/yaml";

/// One entry of the config map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Shared across every agent that receives it: cloning is a reference count.
    pub body: Bytes,
    /// MIME type the agent sees (`text/yaml`).
    pub content_type: String,
}

/// The whole config map an agent receives, keyed by entry name (`""` by default).
/// A `BTreeMap` so that iteration, and so the hash, is in key order.
pub type ConfigMap = BTreeMap<String, ConfigFile>;

/// sha-256 over the canonical encoding of a whole config map.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigHash(pub [u8; 32]);

impl ConfigHash {
    /// Canonical encoding: for each entry in key order, the key, the content type and the body,
    /// each prefixed by its length as a big-endian u64. Same map, same hash, on every replica.
    pub fn of(map: &ConfigMap) -> ConfigHash {
        let mut h = Sha256::new();
        h.update(b"gitamp-config-map-v1");
        h.update((map.len() as u64).to_be_bytes());
        for (key, file) in map {
            for part in [key.as_bytes(), file.content_type.as_bytes(), &file.body[..]] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        ConfigHash(h.finalize().into())
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, as the API shows it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ConfigHash> {
        let v = hex::decode(s).ok()?;
        Some(ConfigHash(v.try_into().ok()?))
    }

    /// From the raw bytes an agent echoes back; `None` unless exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<ConfigHash> {
        Some(ConfigHash(b.try_into().ok()?))
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigHash({})", self.short())
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for ConfigHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ConfigHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConfigHash::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(body: &str) -> ConfigFile {
        ConfigFile {
            body: Bytes::copy_from_slice(body.as_bytes()),
            content_type: YAML_CONTENT_TYPE.into(),
        }
    }

    #[test]
    fn hash_is_deterministic_and_order_independent() {
        let mut a = ConfigMap::new();
        a.insert("b".into(), file("2"));
        a.insert("a".into(), file("1"));
        let mut b = ConfigMap::new();
        b.insert("a".into(), file("1"));
        b.insert("b".into(), file("2"));
        assert_eq!(ConfigHash::of(&a), ConfigHash::of(&b));
    }

    #[test]
    fn hash_separates_key_and_body() {
        let mut a = ConfigMap::new();
        a.insert("ab".into(), file("c"));
        let mut b = ConfigMap::new();
        b.insert("a".into(), file("bc"));
        assert_ne!(ConfigHash::of(&a), ConfigHash::of(&b));
        assert_eq!(
            ConfigHash::from_hex(&ConfigHash::of(&a).to_hex()),
            Some(ConfigHash::of(&a))
        );
    }
}
