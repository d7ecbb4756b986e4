//! A WebSocket connection's outbound queue: the pushes the registry hands to the connection's
//! task, bounded, and nothing allocated while it is empty.
//!
//! Two reasons it is not a `tokio::sync::mpsc` channel. A push is two pieces, the agent's own
//! fields and the config encoded once per revision ([`RemoteConfig::encoded_field`]), which
//! the connection writes with one vectored write: queueing the pieces means a rollout copies
//! nothing per agent (it used to encode a ~6 KiB frame for each). And an mpsc channel
//! allocates a block of 32 slots up front (~1.5 KiB per connection, idle or not); this queue
//! holds a `VecDeque` that is released when it drains.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::sync::Notify;

use crate::wire::{Outgoing, RemoteConfig};

/// One `ServerToAgent` ready to write as a WebSocket message: the frame header and the
/// per-agent fields, then the shared config bytes (if any). Protobuf messages concatenate,
/// so the two pieces in a row are the whole message.
#[derive(Debug, Clone)]
pub struct Push {
    head: Bytes,
    config: Option<Arc<RemoteConfig>>,
}

impl Push {
    /// Encodes the per-agent part of `out`; the config is shared, not copied. A package offer
    /// (rare, a few hundred bytes) is copied into the head: protobuf fields may come in any
    /// order, and the codec writes two pieces.
    pub fn frame(out: &Outgoing) -> Push {
        let offer = out.packages.as_ref().map(|p| p.encoded_field());
        let mut head =
            BytesMut::with_capacity(1 + out.msg.encoded_len() + offer.map_or(0, |o| o.len()));
        head.extend_from_slice(&[crate::frame::HEADER]);
        out.msg.encode_raw(&mut head);
        if let Some(o) = offer {
            head.extend_from_slice(o);
        }
        Push {
            head: head.freeze(),
            config: out.remote_config.clone(),
        }
    }

    /// The pieces to write, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        let config = self.config.as_ref().map_or(&[][..], |c| c.encoded_field());
        [&self.head, config]
    }

    /// Length of the whole frame payload.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// Never true: a frame has at least its header byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (a copy; for tests and the in-process bench).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        for part in self.parts() {
            b.extend_from_slice(part);
        }
        b.freeze()
    }
}

/// Why [`OutboxSender::try_send`] did not queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue holds its capacity: the push goes with the next reply instead.
    #[error("outbound queue full")]
    Full,
    /// The connection's task is gone.
    #[error("connection closed")]
    Closed,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Push>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a valid queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry's end: queue without waiting.
#[derive(Clone)]
pub struct OutboxSender(Arc<Shared>);

/// The connection task's end. Dropping it closes the queue.
pub struct OutboxReceiver(Arc<Shared>);

/// A queue of at most `capacity` pushes (at least 1).
pub fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        notify: Notify::new(),
        capacity: capacity.max(1),
    });
    (OutboxSender(Arc::clone(&shared)), OutboxReceiver(shared))
}

impl OutboxSender {
    /// Queues `push` unless the queue is full or its connection is gone.
    pub fn try_send(&self, push: Push) -> Result<(), SendError> {
        {
            let mut s = self.0.lock();
            if s.closed {
                return Err(SendError::Closed);
            }
            if s.queue.len() >= self.0.capacity {
                return Err(SendError::Full);
            }
            s.queue.push_back(push);
        }
        // Stores a permit if the receiver is not waiting yet: no lost wake-up.
        self.0.notify.notify_one();
        Ok(())
    }

    /// True once the receiver is closed or dropped.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl std::fmt::Debug for OutboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl OutboxReceiver {
    /// The next push, waiting for one. Cancel-safe: a push is taken only when returned.
    pub async fn recv(&self) -> Push {
        loop {
            if let Some(push) = self.try_recv() {
                return push;
            }
            self.0.notify.notified().await;
        }
    }

    /// The next push if one is queued. The queue's memory is released when it drains.
    pub fn try_recv(&self) -> Option<Push> {
        let mut s = self.0.lock();
        let push = s.queue.pop_front();
        if s.queue.is_empty() && s.queue.capacity() > 0 {
            s.queue = VecDeque::new();
        }
        push
    }

    /// Refuses further pushes and drops the queued ones.
    pub fn close(&self) {
        let mut s = self.0.lock();
        s.closed = true;
        s.queue = VecDeque::new();
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use std::collections::BTreeMap;

    fn push(n: u8) -> Push {
        Push::frame(&Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::copy_from_slice(&[n; 16]),
                ..Default::default()
            },
            remote_config: None,
            packages: None,
        })
    }

    #[test]
    fn a_push_is_the_same_bytes_as_the_encoded_frame_and_shares_the_config() {
        let mut files = BTreeMap::new();
        files.insert(
            String::new(),
            (Bytes::from_static(b"receivers: {}\n"), "text/yaml".into()),
        );
        let config = Arc::new(RemoteConfig::new(files, [5; 32]));
        let out = Outgoing {
            msg: proto::ServerToAgent {
                instance_uid: Bytes::copy_from_slice(&[3; 16]),
                capabilities: 7,
                ..Default::default()
            },
            remote_config: Some(Arc::clone(&config)),
            packages: None,
        };
        let p = Push::frame(&out);
        assert_eq!(p.to_bytes(), out.encode_frame());
        assert_eq!(p.len(), out.encode_frame().len());
        assert_eq!(p.parts()[1].as_ptr(), config.encoded_field().as_ptr());
        let decoded =
            crate::frame::decode_frame::<proto::ServerToAgent>(p.to_bytes()).expect("valid frame");
        assert_eq!(
            decoded.remote_config.expect("config").config_hash,
            &config.hash()[..]
        );
    }

    #[tokio::test]
    async fn bounded_in_order_and_closed_when_the_receiver_goes() {
        let (tx, rx) = outbox(2);
        tx.try_send(push(1)).unwrap();
        tx.try_send(push(2)).unwrap();
        assert_eq!(tx.try_send(push(3)), Err(SendError::Full));
        assert_eq!(rx.recv().await.to_bytes(), push(1).to_bytes());
        assert_eq!(
            rx.try_recv().map(|p| p.to_bytes()),
            Some(push(2).to_bytes())
        );
        assert!(rx.try_recv().is_none());
        // A push sent while the receiver waits wakes it.
        let waiter = tokio::spawn(async move {
            let p = rx.recv().await;
            (p, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send(push(4)).unwrap();
        let (p, rx) = waiter.await.unwrap();
        assert_eq!(p.to_bytes(), push(4).to_bytes());
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(push(5)), Err(SendError::Closed));
    }
}
