//! Serde helpers shared by the registry's serializable types.

use std::time::SystemTime;

use bytes::Bytes;

use crate::wire::{Uid, uid_text};

pub(crate) fn ser_uid<S: serde::Serializer>(uid: &Uid, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&uid_text(uid))
}

pub(crate) fn ser_lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

pub(crate) fn ser_hex<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn unix_ms(t: &SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(unix_ms(t))
}

pub(crate) fn ser_opt_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&unix_ms(t)),
        None => s.serialize_none(),
    }
}
