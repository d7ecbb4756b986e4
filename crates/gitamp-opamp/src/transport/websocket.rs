//! A lean RFC 6455 server side: the opening handshake and the frame codec the OpAMP
//! WebSocket transport runs on.
//!
//! Why our own and not tungstenite: a general-purpose codec keeps a read buffer and a write
//! buffer per connection that grow to the largest message seen and never shrink. An OpAMP
//! agent's first report and every config push are several KiB, so each idle connection held
//! ~20 KiB of buffers (heaptrack, 5,000 agents; docs/benchmarks.md). Here an idle connection
//! holds nothing but a 14-byte header array: a payload is read into a buffer sized from the
//! bytes that actually arrived and handed on, and a frame is written as header + payload with
//! one vectored write, without copying the (shared) payload.
//!
//! What is implemented is what a server needs: masked client frames, fragmentation with
//! control frames in between, ping → pong, the close handshake, size limits checked before a
//! payload is read. No extensions (permessage-deflate is not negotiated; OpAMP payloads are
//! protobuf) and no subprotocols.
//!
//! The load generator's simulated agents use the same reader in the client role
//! ([`MessageReader::client`]: unmasked server frames) and [`put_client_frame`] to write, so a
//! rollout to thousands of agents does not grow (and fault in) a pair of buffers per agent on
//! the machine it is measured on.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID RFC 6455 §1.3 appends to the client's key.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
/// The peer broke the protocol (unmasked frame, reserved bits, bad opcode, ...).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// A message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// A message that did not arrive whole in time (policy violation).
pub const CLOSE_POLICY: u16 = 1008;

/// Frame opcodes.
pub(crate) mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Largest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// First read reservation for a payload: a declared length is a claim, not data, so memory
/// grows with the bytes that arrive (a peer announcing 4 MiB and sending nothing holds 16 KiB).
const FIRST_READ: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Handshake

/// Why an upgrade request is not a WebSocket opening handshake we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not an upgrade request at all.
    #[error("not a WebSocket upgrade: `Connection: upgrade` and `Upgrade: websocket` are required")]
    NotUpgrade,
    /// A `Sec-WebSocket-Version` other than 13.
    #[error("unsupported WebSocket version: only 13 is spoken")]
    Version,
    /// No usable `Sec-WebSocket-Key`.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The HTTP status for the refusal: 426 tells a client which version to speak.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// True if the comma-separated header `name` has `token` (case-insensitive), in any of its
/// occurrences.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the client's opening handshake (§4.2.1) and returns the `Sec-WebSocket-Accept`
/// value for the 101 answer.
pub fn accept(headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Key)?;
    // The key is base64 of 16 random bytes (24 characters).
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| HandshakeError::Key)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::Key);
    }
    Ok(accept_value(key.as_bytes()))
}

/// `base64(SHA-1(key ‖ GUID))`.
pub fn accept_value(key: &[u8]) -> HeaderValue {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One thing read from the peer: a whole data message or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete binary message (fragments joined).
    Binary(Bytes),
    /// A complete text message. OpAMP has no use for text; its content is not kept.
    Text,
    /// A ping, whose payload the pong must echo.
    Ping(Bytes),
    /// A pong (ignored by the server; liveness is the heartbeat's job).
    Pong,
    /// The peer closes, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The connection failed or ended without a close frame.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke RFC 6455; the connection is closed with 1002.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A message over the limit; closed with 1009.
    #[error("message of {size} bytes over the {limit}-byte limit")]
    TooBig {
        /// The announced size.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message was started and not finished in time; closed with 1008.
    #[error("message not complete within {0:?} of its first byte")]
    Slow(std::time::Duration),
}

impl ReadError {
    /// The close code to send the peer, if the connection is still writable.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ReadError::Io(_) => None,
            ReadError::Protocol(_) => Some(CLOSE_PROTOCOL),
            ReadError::TooBig { .. } => Some(CLOSE_TOO_BIG),
            ReadError::Slow(_) => Some(CLOSE_POLICY),
        }
    }
}

/// Bytes read ahead of the parser: a frame header (at most 14 bytes) and, for a small message
/// such as a heartbeat, all of it, so a message costs one read, not one per header field.
const READ_AHEAD: usize = 64;

/// Reads messages from a client (or, in the client role, from a server). Holds a 64-byte
/// read-ahead and the fragments of a message in progress, nothing else.
#[derive(Debug)]
pub struct MessageReader<R> {
    io: R,
    limit: usize,
    /// Server role: every frame must be masked (§5.1). Client role: none may be.
    expect_masked: bool,
    /// Opcode and data of a fragmented message still waiting for its final frame.
    partial: Option<(u8, BytesMut)>,
    /// How long a message (all its fragments) may take from its first byte, and when the one
    /// in progress must be done: a peer that starts a message and stalls would otherwise hold
    /// its buffer for as long as the connection lives. Waiting between messages is not timed.
    message_timeout: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
    ahead: [u8; READ_AHEAD],
    /// `ahead[start..end]` is read and not yet parsed.
    start: usize,
    end: usize,
}

/// A parsed frame header.
struct FrameHead {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: Option<[u8; 4]>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader refusing messages (and frames) over `limit` bytes.
    pub fn new(io: R, limit: usize) -> Self {
        Self {
            io,
            limit,
            expect_masked: true,
            partial: None,
            message_timeout: None,
            deadline: None,
            ahead: [0; READ_AHEAD],
            start: 0,
            end: 0,
        }
    }

    /// A reader in the client role: frames from a server, which are never masked. `already`
    /// is what was read past the end of the opening handshake's answer (at most 64 bytes,
    /// else `None`).
    pub fn client(io: R, limit: usize, already: &[u8]) -> Option<Self> {
        if already.len() > READ_AHEAD {
            return None;
        }
        let mut reader = Self::new(io, limit);
        reader.expect_masked = false;
        reader.ahead[..already.len()].copy_from_slice(already);
        reader.end = already.len();
        Some(reader)
    }

    /// Each message must arrive whole within `timeout` of its first byte (else
    /// [`ReadError::Slow`]).
    pub fn with_message_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.message_timeout = Some(timeout);
        self
    }

    /// The next message or control frame. Not cancel-safe: drive it from a place that keeps
    /// the future across polls (see `ws::run`).
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        if self.deadline.is_none() {
            // Idle until the next frame starts, for as long as it takes.
            self.fill(1).await?;
            self.deadline = self
                .message_timeout
                .map(|t| tokio::time::Instant::now() + t);
        }
        let next = match (self.deadline, self.message_timeout) {
            (Some(deadline), Some(timeout)) => {
                tokio::time::timeout_at(deadline, self.next_unbounded())
                    .await
                    .map_err(|_| ReadError::Slow(timeout))?
            }
            _ => self.next_unbounded().await,
        };
        // A fragmented message still in progress keeps its deadline across control frames.
        if self.partial.is_none() {
            self.deadline = None;
        }
        next
    }

    async fn next_unbounded(&mut self) -> Result<Incoming, ReadError> {
        loop {
            let head = self.read_head().await?;
            match head.opcode {
                opcode::CLOSE | opcode::PING | opcode::PONG => {
                    if !head.fin {
                        return Err(ReadError::Protocol("fragmented control frame"));
                    }
                    if head.len > MAX_CONTROL_PAYLOAD as u64 {
                        return Err(ReadError::Protocol("control frame over 125 bytes"));
                    }
                    let payload = self.read_payload(&head, BytesMut::new()).await?;
                    return Ok(match head.opcode {
                        opcode::PING => Incoming::Ping(payload.freeze()),
                        opcode::PONG => Incoming::Pong,
                        _ => Incoming::Close(close_code(&payload)?),
                    });
                }
                opcode::TEXT | opcode::BINARY => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message before the last one's final fragment",
                        ));
                    }
                    self.check_size(0, head.len)?;
                    let data = self.read_payload(&head, BytesMut::new()).await?;
                    if head.fin {
                        return Ok(message(head.opcode, data));
                    }
                    self.partial = Some((head.opcode, data));
                }
                opcode::CONTINUATION => {
                    let Some((kind, data)) = self.partial.take() else {
                        return Err(ReadError::Protocol("continuation without a message"));
                    };
                    self.check_size(data.len(), head.len)?;
                    let data = self.read_payload(&head, data).await?;
                    if head.fin {
                        return Ok(message(kind, data));
                    }
                    self.partial = Some((kind, data));
                }
                _ => return Err(ReadError::Protocol("reserved opcode")),
            }
        }
    }

    fn check_size(&self, have: usize, more: u64) -> Result<(), ReadError> {
        let size = (have as u64).saturating_add(more);
        if size > self.limit as u64 {
            return Err(ReadError::TooBig {
                size,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Makes at least `n` (≤ 14) unparsed bytes available in the read-ahead.
    async fn fill(&mut self, n: usize) -> Result<(), ReadError> {
        if self.start + n > READ_AHEAD {
            self.ahead.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            let read = self.io.read(&mut self.ahead[self.end..]).await?;
            if read == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.end += read;
        }
        Ok(())
    }

    /// Takes `N` parsed bytes from the read-ahead (after [`Self::fill`]).
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.ahead[self.start..self.start + N]);
        self.start += N;
        out
    }

    async fn read_head(&mut self) -> Result<FrameHead, ReadError> {
        self.fill(2).await?;
        let b: [u8; 2] = self.take();
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol(
                "reserved bits set (no extension agreed)",
            ));
        }
        let masked = b[1] & 0x80 != 0;
        if masked != self.expect_masked {
            return Err(ReadError::Protocol(if masked {
                "masked frame from a server"
            } else {
                "unmasked frame from a client"
            }));
        }
        let mask_len = if masked { 4 } else { 0 };
        let len = match b[1] & 0x7F {
            126 => {
                self.fill(2 + mask_len).await?;
                u64::from(u16::from_be_bytes(self.take()))
            }
            127 => {
                self.fill(8 + mask_len).await?;
                let len = u64::from_be_bytes(self.take());
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("64-bit length with the top bit set"));
                }
                len
            }
            n => u64::from(n),
        };
        let mask = if masked {
            self.fill(4).await?;
            Some(self.take())
        } else {
            None
        };
        Ok(FrameHead {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0F,
            len,
            mask,
        })
    }

    /// Appends the frame's payload (unmasked) to `data`: first what was read ahead, then the
    /// rest straight from the connection. Memory grows with what arrives.
    async fn read_payload(
        &mut self,
        head: &FrameHead,
        mut data: BytesMut,
    ) -> Result<BytesMut, ReadError> {
        // `len` fits in usize: check_size bounded it by `limit` (or it is a control frame).
        let len = head.len as usize;
        let start = data.len();
        let from_ahead = len.min(self.end - self.start);
        data.reserve(len.min(FIRST_READ).max(from_ahead));
        data.extend_from_slice(&self.ahead[self.start..self.start + from_ahead]);
        self.start += from_ahead;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        while data.len() - start < len {
            let want = len - (data.len() - start);
            if data.capacity() == data.len() {
                data.reserve(want.min(data.capacity().max(FIRST_READ)));
            }
            let n = (&mut self.io).take(want as u64).read_buf(&mut data).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        if let Some(mask) = head.mask {
            unmask(&mut data[start..], mask);
        }
        Ok(data)
    }
}

fn message(kind: u8, data: BytesMut) -> Incoming {
    if kind == opcode::TEXT {
        Incoming::Text
    } else {
        Incoming::Binary(data.freeze())
    }
}

/// The status code of a close frame's payload (§5.5.1): none, or two bytes and a reason.
fn close_code(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("close frame with a 1-byte payload")),
        [a, b, ..] => Ok(Some(u16::from_be_bytes([*a, *b]))),
    }
}

/// XORs `data` with the 4-byte masking key (§5.3), a word at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A final frame header without the mask bit (a client frame sets it): at most 10 bytes.
fn frame_head(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

/// One frame to write: its opcode and its payload as two pieces in a row (a push is the
/// agent's own fields, then the config bytes shared by every agent).
#[derive(Debug, Clone, Copy)]
pub struct OutFrame<'a> {
    opcode: u8,
    parts: [&'a [u8]; 2],
}

impl<'a> OutFrame<'a> {
    /// A binary message.
    pub fn binary(parts: [&'a [u8]; 2]) -> Self {
        OutFrame {
            opcode: opcode::BINARY,
            parts,
        }
    }

    /// The pong answering a ping with `payload`.
    pub fn pong(payload: &'a [u8]) -> Self {
        OutFrame {
            opcode: opcode::PONG,
            parts: [payload, &[]],
        }
    }
}

/// The pieces of several frames as one [`Buf`], so they go out in one vectored write.
struct Pieces<'a> {
    pieces: Vec<&'a [u8]>,
    /// First piece not fully written, and how much of it was.
    index: usize,
    offset: usize,
    remaining: usize,
}

impl Buf for Pieces<'_> {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces
            .get(self.index)
            .map_or(&[], |p| &p[self.offset..])
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining -= n.min(self.remaining);
        while n > 0 && self.index < self.pieces.len() {
            let left = self.pieces[self.index].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
    }

    fn chunks_vectored<'b>(&'b self, dst: &mut [std::io::IoSlice<'b>]) -> usize {
        let mut n = 0;
        for (i, piece) in self.pieces.iter().enumerate().skip(self.index) {
            if n == dst.len() {
                break;
            }
            let from = if i == self.index { self.offset } else { 0 };
            dst[n] = std::io::IoSlice::new(&piece[from..]);
            n += 1;
        }
        n
    }
}

/// Writes `frames` with as few writes as the transport allows (one vectored write for up to
/// ~20 frames), without copying payloads, then flushes (TLS holds records until flushed).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[OutFrame<'_>],
) -> std::io::Result<()> {
    let heads: Vec<([u8; 10], usize)> = frames
        .iter()
        .map(|f| frame_head(f.opcode, f.parts[0].len() + f.parts[1].len()))
        .collect();
    let mut pieces = Vec::with_capacity(frames.len() * 3);
    for (frame, (head, n)) in frames.iter().zip(&heads) {
        pieces.push(&head[..*n]);
        pieces.extend(frame.parts.iter().filter(|p| !p.is_empty()));
    }
    let remaining = pieces.iter().map(|p| p.len()).sum();
    let mut buf = Pieces {
        pieces,
        index: 0,
        offset: 0,
        remaining,
    };
    io.write_all_buf(&mut buf).await?;
    io.flush().await
}

async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    opcode: u8,
    parts: [&[u8]; 2],
) -> std::io::Result<()> {
    write_frames(io, &[OutFrame { opcode, parts }]).await
}

/// A binary message made of two pieces (a push: the agent's fields, then the shared config).
pub async fn write_binary<W: AsyncWrite + Unpin>(
    io: &mut W,
    parts: [&[u8]; 2],
) -> std::io::Result<()> {
    write_frame(io, opcode::BINARY, parts).await
}

/// A ping (the server sends them so a half-open connection fails on write).
pub async fn write_ping<W: AsyncWrite + Unpin>(io: &mut W) -> std::io::Result<()> {
    write_frame(io, opcode::PING, [&[], &[]]).await
}

/// Appends one final client frame (§5.2, §5.3): the header with the mask bit, the masking key,
/// and `payload` masked with it. A client must mask, so a client frame is always a copy; the
/// caller sizes `out` once for everything it sends together.
pub(crate) fn put_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let (mut head, n) = frame_head(opcode, payload.len());
    head[1] |= 0x80;
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
}

/// The size of a client frame carrying `payload_len` bytes.
pub(crate) fn client_frame_len(payload_len: usize) -> usize {
    frame_head(0, payload_len).1 + 4 + payload_len
}

/// A close frame with `code` and a short reason.
pub async fn write_close<W: AsyncWrite + Unpin>(
    io: &mut W,
    code: u16,
    reason: &str,
) -> std::io::Result<()> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)]);
    write_frame(io, opcode::CLOSE, [&payload, &[]]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a client would write it.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | op];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        unmask(&mut p, mask);
        out.extend_from_slice(&p);
        out
    }

    async fn read_all(bytes: Vec<u8>, limit: usize) -> Vec<Result<Incoming, String>> {
        let mut r = MessageReader::new(&bytes[..], limit);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return out;
                }
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn accept_value_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_value(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn handshake_requires_upgrade_version_and_key() {
        let mut h = HeaderMap::new();
        assert_eq!(accept(&h), Err(HandshakeError::NotUpgrade));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(accept(&h), Err(HandshakeError::Version));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            accept(&h).unwrap_err().status(),
            StatusCode::UPGRADE_REQUIRED
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert_eq!(accept(&h), Err(HandshakeError::Key));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("c2hvcnQ="),
        );
        assert_eq!(accept(&h), Err(HandshakeError::Key));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(accept(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn unmask_is_its_own_inverse_at_every_length() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut d = data.clone();
            unmask(&mut d, [1, 2, 3, 4]);
            for (i, (a, b)) in data.iter().zip(&d).enumerate() {
                assert_eq!(a ^ [1, 2, 3, 4][i % 4], *b);
            }
            unmask(&mut d, [1, 2, 3, 4]);
            assert_eq!(d, data);
        }
    }

    #[tokio::test]
    async fn messages_of_every_length_encoding_round_trip() {
        for len in [0, 1, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let got = read_all(client_frame(true, 2, &payload, [9, 8, 7, 6]), 1 << 20).await;
            assert_eq!(
                got,
                vec![Ok(Incoming::Binary(Bytes::from(payload)))],
                "{len}"
            );
        }
    }

    #[tokio::test]
    async fn fragments_join_and_control_frames_pass_between_them() {
        let mut bytes = client_frame(false, 2, b"ab", [1, 1, 1, 1]);
        bytes.extend(client_frame(true, 9, b"hi", [2, 2, 2, 2]));
        bytes.extend(client_frame(false, 0, b"cd", [3, 3, 3, 3]));
        bytes.extend(client_frame(true, 0, b"ef", [4, 4, 4, 4]));
        bytes.extend(client_frame(true, 10, b"", [5, 5, 5, 5]));
        bytes.extend(client_frame(true, 1, b"text", [6, 6, 6, 6]));
        bytes.extend(client_frame(true, 8, &1000u16.to_be_bytes(), [7, 7, 7, 7]));
        assert_eq!(
            read_all(bytes, 100).await,
            vec![
                Ok(Incoming::Ping(Bytes::from_static(b"hi"))),
                Ok(Incoming::Binary(Bytes::from_static(b"abcdef"))),
                Ok(Incoming::Pong),
                Ok(Incoming::Text),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    /// Hands out at most `step` bytes per read (varying), as a slow network would.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.step = self.step % 7 + 1;
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn messages_split_across_reads_anywhere_parse_the_same() {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for len in [0usize, 5, 40, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            bytes.extend(client_frame(true, 2, &payload, [1, 2, 3, 4]));
            want.push(Incoming::Binary(Bytes::from(payload)));
            bytes.extend(client_frame(true, 9, b"p", [4, 3, 2, 1]));
            want.push(Incoming::Ping(Bytes::from_static(b"p")));
        }
        let mut r = MessageReader::new(
            Trickle {
                data: &bytes,
                step: 0,
            },
            1 << 20,
        );
        for w in want {
            assert_eq!(r.next().await.unwrap(), w);
        }
        assert!(matches!(r.next().await, Err(ReadError::Io(_))));
    }

    #[tokio::test]
    async fn protocol_violations_are_named() {
        let unmasked = vec![0x82, 0x01, b'x'];
        let mut rsv = client_frame(true, 2, b"x", [1, 2, 3, 4]);
        rsv[0] |= 0x40;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "unmasked"),
            (rsv, "reserved bits"),
            (client_frame(true, 3, b"", [0; 4]), "reserved opcode"),
            (client_frame(true, 0, b"x", [0; 4]), "continuation without"),
            (client_frame(false, 9, b"", [0; 4]), "fragmented control"),
            (client_frame(true, 9, &[0; 126], [0; 4]), "over 125"),
            (client_frame(true, 8, &[3], [0; 4]), "1-byte payload"),
            (
                [
                    client_frame(false, 2, b"a", [0; 4]),
                    client_frame(true, 2, b"b", [0; 4]),
                ]
                .concat(),
                "new message before",
            ),
        ];
        for (bytes, want) in cases {
            let got = read_all(bytes, 100).await;
            let err = got.last().and_then(|r| r.as_ref().err()).cloned();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(want)),
                "{want}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn size_limit_applies_to_the_declared_length_and_to_joined_fragments() {
        // Declared 1 MiB, nothing sent: refused before any payload is read.
        let mut declared = vec![0x82, 0x80 | 127];
        declared.extend_from_slice(&(1u64 << 20).to_be_bytes());
        declared.extend_from_slice(&[0; 4]);
        let got = read_all(declared, 1000).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("over the 1000-byte limit")));
        let mut err = MessageReader::new(&[][..], 1).check_size(0, 2).unwrap_err();
        assert_eq!(err.close_code(), Some(CLOSE_TOO_BIG));
        // Two fragments of 600 against a limit of 1000.
        let frags = [
            client_frame(false, 2, &[1; 600], [0; 4]),
            client_frame(true, 0, &[1; 600], [0; 4]),
        ]
        .concat();
        let got = read_all(frags, 1000).await;
        assert!(matches!(&got[..], [Err(e)] if e.contains("1200 bytes")));
        err = ReadError::Protocol("x");
        assert_eq!(err.close_code(), Some(CLOSE_PROTOCOL));
    }

    #[tokio::test]
    async fn a_started_message_must_finish_in_time_but_idle_is_not_timed() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut r = MessageReader::new(server, 1 << 20)
            .with_message_timeout(std::time::Duration::from_millis(100));
        // Idle: nothing sent, no error.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(300), r.next()).await;
        assert!(idle.is_err(), "an idle connection is not a slow message");
        // A whole message in time is read.
        client
            .write_all(&client_frame(true, 2, b"ok", [1, 2, 3, 4]))
            .await
            .unwrap();
        assert_eq!(
            r.next().await.unwrap(),
            Incoming::Binary(Bytes::from_static(b"ok"))
        );
        // A first fragment, a ping, then silence: the ping comes through, the message times out.
        client
            .write_all(&client_frame(false, 2, b"part", [1, 2, 3, 4]))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, 9, b"", [1, 2, 3, 4]))
            .await
            .unwrap();
        assert_eq!(r.next().await.unwrap(), Incoming::Ping(Bytes::new()));
        let err = r.next().await.unwrap_err();
        assert!(matches!(err, ReadError::Slow(_)), "{err}");
        assert_eq!(err.close_code(), Some(CLOSE_POLICY));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_io_error_not_a_message() {
        let mut bytes = client_frame(true, 2, &[7; 300], [1, 2, 3, 4]);
        bytes.truncate(200);
        let mut r = MessageReader::new(&bytes[..], 1000);
        assert!(matches!(r.next().await, Err(ReadError::Io(_))));
    }

    /// Accepts at most `step` bytes per write (varying), like a full socket buffer would.
    struct Choke {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Choke {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.step = self.step % 11 + 1;
            let n = self.step.min(buf.len());
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            // Takes a few slices whole, then part of one: every split point of a `Pieces`.
            self.step = self.step % 11 + 1;
            let mut budget = self.step * 7;
            let mut n = 0;
            for b in bufs {
                let take = budget.min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
                budget -= take;
                if budget == 0 {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn several_frames_written_in_pieces_arrive_whole_and_in_order() {
        let big: Vec<u8> = (0..70_000).map(|i| (i % 249) as u8).collect();
        let frames = [
            OutFrame::binary([b"head", &big[..300]]),
            OutFrame::pong(b"p"),
            OutFrame::binary([&big[..], &[]]),
            OutFrame::binary([b"", b"tail"]),
        ];
        let mut choke = Choke {
            out: Vec::new(),
            step: 0,
        };
        write_frames(&mut choke, &frames).await.unwrap();
        let mut expected = Vec::new();
        for f in &frames {
            let (head, n) = frame_head(f.opcode, f.parts[0].len() + f.parts[1].len());
            expected.extend_from_slice(&head[..n]);
            expected.extend_from_slice(f.parts[0]);
            expected.extend_from_slice(f.parts[1]);
        }
        assert_eq!(choke.out.len(), expected.len());
        assert!(choke.out == expected);
    }

    #[tokio::test]
    async fn written_frames_have_minimal_headers() {
        for (len, head) in [(5usize, 2usize), (126, 4), (70_000, 10)] {
            let mut out = Vec::new();
            let payload = vec![3; len];
            let (a, b) = payload.split_at(len / 3);
            write_binary(&mut out, [a, b]).await.unwrap();
            assert_eq!(out.len(), head + len);
            assert_eq!(&out[head..], &payload[..]);
            assert_eq!(out[0], 0x82);
        }
        let mut out = Vec::new();
        write_close(&mut out, CLOSE_TOO_BIG, "message too big")
            .await
            .unwrap();
        assert_eq!(&out[..4], &[0x88, 17, 0x03, 0xF1]);
    }

    #[tokio::test]
    async fn client_frames_read_back_through_the_server_reader_at_every_length_encoding() {
        for len in [0, 1, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            put_client_frame(&mut out, opcode::BINARY, &payload, [0xA5, 0x5A, 1, 2]);
            assert_eq!(out.len(), client_frame_len(len), "{len}");
            // Masked on the wire: a non-trivial payload is not sent in the clear.
            if len > 4 {
                assert_ne!(&out[out.len() - len..], &payload[..], "{len}");
            }
            // The reference encoder of these tests writes the same bytes.
            assert_eq!(
                out,
                client_frame(true, 2, &payload, [0xA5, 0x5A, 1, 2]),
                "{len}"
            );
            let got = read_all(out, 1 << 20).await;
            assert_eq!(
                got,
                vec![Ok(Incoming::Binary(Bytes::from(payload)))],
                "{len}"
            );
        }
    }

    #[tokio::test]
    async fn the_client_role_reads_server_frames_and_refuses_masked_ones() {
        let mut wire = Vec::new();
        let big = vec![7u8; 70_000];
        write_binary(&mut wire, [b"hello", &[]]).await.unwrap();
        write_frames(
            &mut wire,
            &[OutFrame::pong(b"p"), OutFrame::binary([&big, &[]])],
        )
        .await
        .unwrap();
        write_close(&mut wire, CLOSE_NORMAL, "bye").await.unwrap();
        // The first bytes arrive with the handshake's answer (read ahead of the reader).
        let (already, rest) = wire.split_at(9);
        let mut r = MessageReader::client(rest, 1 << 20, already).unwrap();
        assert_eq!(
            r.next().await.unwrap(),
            Incoming::Binary(Bytes::from_static(b"hello"))
        );
        assert_eq!(r.next().await.unwrap(), Incoming::Pong);
        assert_eq!(r.next().await.unwrap(), Incoming::Binary(Bytes::from(big)));
        assert_eq!(r.next().await.unwrap(), Incoming::Close(Some(CLOSE_NORMAL)));

        let masked = client_frame(true, 2, b"x", [1, 2, 3, 4]);
        let mut r = MessageReader::client(&masked[..], 1 << 20, &[]).unwrap();
        let err = r.next().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol violation: masked frame from a server"
        );
        assert!(MessageReader::client(&masked[..], 1 << 20, &[0; READ_AHEAD + 1]).is_none());
    }
}
