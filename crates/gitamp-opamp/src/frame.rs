//! OpAMP WebSocket framing: `varint header (0)` ‖ `protobuf message`.
//!
//! Pure functions so the server and the simulated agent share one implementation.
//!
//! **Legacy header-less frames are rejected.** Before spec v0.7 frames carried no
//! header; opamp-go still accepts them (first byte ≠ 0 ⇒ no header), but the grace
//! period ended 2023-02-01 and every maintained client sends the header. We read the
//! first bytes as the varint header, so a header-less frame (which starts with a
//! field tag, never 0) decodes as a non-zero header and is reported as
//! [`FrameError::NonZeroHeader`], which the server answers with BadRequest. Accepting
//! it would make a corrupted header indistinguishable from a legacy frame.

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

/// Why a WebSocket frame could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame was empty: not even the header byte.
    #[error("empty frame: missing OpAMP header")]
    Empty,
    /// The varint header could not be read (truncated or longer than 10 bytes).
    #[error("malformed OpAMP frame header")]
    BadHeader,
    /// The header decoded to a value other than 0 (the only value defined), which
    /// includes legacy header-less frames.
    #[error(
        "unsupported OpAMP frame header {0} (only 0 is defined; header-less frames are not accepted)"
    )]
    NonZeroHeader(u64),
    /// The payload after the header is not a valid protobuf message.
    #[error("invalid protobuf payload: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The header every frame starts with today.
pub const HEADER: u8 = 0x00;

/// Encodes `msg` as one WebSocket frame payload (header byte 0 then the message).
pub fn encode_frame<M: Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(1 + msg.encoded_len());
    buf.extend_from_slice(&[HEADER]);
    // Encoding into a BytesMut cannot run out of space: it grows.
    msg.encode_raw(&mut buf);
    buf.freeze()
}

/// Wraps an already-encoded message (e.g. a cached `ServerToAgent` body) in a frame.
pub fn frame_encoded(body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(1 + body.len());
    buf.extend_from_slice(&[HEADER]);
    buf.extend_from_slice(body);
    buf.freeze()
}

/// Checks the varint header and returns the payload that follows it.
pub fn split_header(mut frame: Bytes) -> Result<Bytes, FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let header = prost::encoding::decode_varint(&mut frame).map_err(|_| FrameError::BadHeader)?;
    if header != 0 {
        return Err(FrameError::NonZeroHeader(header));
    }
    Ok(frame)
}

/// Decodes one frame into a message. `bytes` fields of the result share the frame's
/// buffer instead of copying. A frame of only the header is a valid empty message.
pub fn decode_frame<M: Message + Default>(frame: Bytes) -> Result<M, FrameError> {
    let mut payload = split_header(frame)?;
    let msg = M::decode(&mut payload)?;
    debug_assert!(!payload.has_remaining());
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AgentToServer, ServerToAgent};

    #[test]
    fn round_trip() {
        let msg = AgentToServer {
            instance_uid: Bytes::from_static(&[7; 16]),
            sequence_num: 3,
            capabilities: 1,
            ..Default::default()
        };
        let frame = encode_frame(&msg);
        assert_eq!(frame[0], 0);
        let back: AgentToServer = decode_frame(frame).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn header_only_is_empty_message() {
        let m: ServerToAgent = decode_frame(Bytes::from_static(&[0])).unwrap();
        assert_eq!(m, ServerToAgent::default());
    }

    #[test]
    fn rejects_bad_frames() {
        assert!(matches!(
            decode_frame::<AgentToServer>(Bytes::new()),
            Err(FrameError::Empty)
        ));
        // Legacy header-less frame: starts with the tag of field 1 (0x0a).
        let legacy = AgentToServer {
            instance_uid: Bytes::from_static(&[1; 16]),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            decode_frame::<AgentToServer>(Bytes::from(legacy)),
            Err(FrameError::NonZeroHeader(10))
        ));
        // Truncated varint header.
        assert!(matches!(
            decode_frame::<AgentToServer>(Bytes::from_static(&[0x80])),
            Err(FrameError::BadHeader)
        ));
        // Garbage payload.
        assert!(matches!(
            decode_frame::<AgentToServer>(Bytes::from_static(&[0, 0xff, 0xff])),
            Err(FrameError::Decode(_))
        ));
    }
}
