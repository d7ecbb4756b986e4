//! Per-message server rules, shared by both transports.
//!
//! [`handle_message`] applies one `AgentToServer` to the [`Fleet`] and builds the one
//! reply it deserves. It never awaits and takes each lock only briefly.
//!
//! Rules (the OpAMP specification's "Status Reporting" and "Agent Identification"):
//! - omitted sub-messages keep their last value; a present one replaces it whole;
//! - ReportFullState is asked when the sequence broke (gap, repeat, or an agent this
//!   server has no state for) **and** the message lacks a sub-message the agent's
//!   capabilities say it reports. After asking once, the next message is accepted as
//!   the full report whatever its number, so clients whose numbering repeats or skips
//!   (and agents that legitimately have no remote config status yet) converge; but a
//!   message without a description never answers for an agent this server has no
//!   description of (it was built before the agent read the request), and an HTTP poll
//!   that skipped numbers without one means the answer went to another server: asked again
//!   (see `AgentEntry::take_sequence`);
//! - `instance_uid` must be 16 bytes (else BadRequest); RequestInstanceUid, or a UID
//!   live on another WebSocket with a different description, gets a fresh UUIDv7 in
//!   `agent_identification`, and the message is recorded under the new UID;
//! - a message that straggles in just after `agent_disconnect` (numbered at or below
//!   it, without a description, within [`STRAGGLER_WINDOW`]) is answered but does not
//!   reconnect the agent: the Python client can send a queued heartbeat concurrently
//!   with, and after, its disconnect message. A restarted agent reports its
//!   description first, and a reconnecting one continues its numbering, so both still
//!   reconnect;
//! - every non-error reply echoes `instance_uid` and carries the server capabilities;
//!   an error reply carries only `instance_uid` and `error_response`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::fleet::{AgentEntry, Fleet, FleetEvent, lock};
use crate::offers::{Reach, SettingsStatus};
use crate::outbox::OutboxSender;
use crate::packages::PackageReport;
use crate::plan_wait::PlanMark;
use crate::proto::{self, AgentCapabilities as Cap};
use crate::report::{
    Attributes, Changes, ConfigFile, ConfigFiles, Description, Health, RemoteState, RemoteStatus,
    Transport,
};
use crate::wire::{Outgoing, RemoteConfig, SERVER_CAPABILITIES, Uid, uid_text};

/// How long after an `agent_disconnect` a late message of the same session is
/// recognised as such (see the module docs).
pub const STRAGGLER_WINDOW: Duration = Duration::from_secs(10);

/// One transport-level stream of messages: a WebSocket connection, or one HTTP request.
#[derive(Debug)]
pub struct Connection {
    pub(crate) id: u64,
    pub(crate) transport: Transport,
    /// Outbound queue of a WebSocket connection (None for HTTP).
    pub(crate) tx: Option<OutboxSender>,
    /// UIDs seen on this stream, disconnected when the transport closes.
    pub(crate) uids: HashSet<Uid>,
    /// How the agent reached us (for connection-settings offers).
    pub(crate) reach: Option<Arc<Reach>>,
}

impl Connection {
    /// A connection context. `tx` is the bounded outbound queue of a WebSocket.
    pub fn new(id: u64, transport: Transport, tx: Option<OutboxSender>) -> Self {
        Self {
            id,
            transport,
            tx,
            uids: HashSet::new(),
            reach: None,
        }
    }

    /// The same, with how the agent reached us (its `Host` and `Authorization` headers).
    pub fn with_reach(mut self, reach: Reach) -> Self {
        self.reach = Some(Arc::new(reach));
        self
    }

    /// UIDs currently bound to this stream.
    pub fn uids(&self) -> impl Iterator<Item = &Uid> {
        self.uids.iter()
    }
}

/// An error reply: only `instance_uid` (echoed as received) and `error_response`.
pub fn error_reply(
    instance_uid: Bytes,
    kind: proto::ServerErrorResponseType,
    text: impl Into<String>,
) -> Outgoing {
    Outgoing {
        msg: proto::ServerToAgent {
            instance_uid,
            error_response: Some(proto::ServerErrorResponse {
                r#type: kind as i32,
                error_message: text.into(),
                details: None,
            }),
            ..Default::default()
        },
        remote_config: None,
        packages: None,
    }
}

/// BadRequest reply, for malformed input.
pub fn bad_request(instance_uid: Bytes, text: impl Into<String>) -> Outgoing {
    error_reply(
        instance_uid,
        proto::ServerErrorResponseType::BadRequest,
        text,
    )
}

fn has(caps: u64, c: Cap) -> bool {
    caps & c as u64 != 0
}

/// True if `msg` lacks a sub-message that `caps` says the agent reports.
pub fn lacks_reported_state(caps: u64, msg: &proto::AgentToServer) -> bool {
    msg.agent_description.is_none()
        || (has(caps, Cap::ReportsHealth) && msg.health.is_none())
        || (has(caps, Cap::ReportsEffectiveConfig) && msg.effective_config.is_none())
        || (has(caps, Cap::ReportsRemoteConfig) && msg.remote_config_status.is_none())
        || (has(caps, Cap::ReportsPackageStatuses) && msg.package_statuses.is_none())
        || (has(caps, Cap::ReportsAvailableComponents) && msg.available_components.is_none())
}

/// Renders an attribute value as a string (scalars as text, lists/maps as JSON).
fn any_to_json(v: &proto::AnyValue) -> serde_json::Value {
    use proto::any_value::Value as V;
    match &v.value {
        None => serde_json::Value::Null,
        Some(V::StringValue(s)) => s.clone().into(),
        Some(V::BoolValue(b)) => (*b).into(),
        Some(V::IntValue(i)) => (*i).into(),
        Some(V::DoubleValue(d)) => (*d).into(),
        Some(V::BytesValue(b)) => hex::encode(b).into(),
        Some(V::ArrayValue(a)) => a.values.iter().map(any_to_json).collect(),
        Some(V::KvlistValue(kv)) => kv
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value
                        .as_ref()
                        .map_or(serde_json::Value::Null, any_to_json),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn flatten(kvs: &[proto::KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().map(any_to_json) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// Flattens an `AgentDescription` into string maps.
pub fn description_of(d: &proto::AgentDescription) -> Description {
    Description {
        identifying: flatten(&d.identifying_attributes),
        non_identifying: flatten(&d.non_identifying_attributes),
    }
}

fn health_of(h: &proto::ComponentHealth) -> Health {
    Health {
        healthy: h.healthy,
        start_time_unix_nano: h.start_time_unix_nano,
        last_error: h.last_error.clone(),
        status: h.status.clone(),
        status_time_unix_nano: h.status_time_unix_nano,
        components: h
            .component_health_map
            .iter()
            .map(|(k, v)| (k.clone(), health_of(v)))
            .collect(),
    }
}

/// The reported effective config, holding nothing of the received message: a body equal to
/// a file of the config handed over for it or of any served config shares those bytes (every
/// agent that applied a config reports the same few KiB), any other body is copied. A slice
/// would keep the whole message buffer alive for as long as the agent is registered.
fn effective_of(
    e: &proto::EffectiveConfig,
    desired: Option<&RemoteConfig>,
    fleet: &Fleet,
) -> ConfigFiles {
    let Some(map) = &e.config_map else {
        return ConfigFiles::default();
    };
    let mut served = None;
    map.config_map
        .iter()
        .map(|(k, f)| {
            let body = desired
                .and_then(|d| d.same_body(k, &f.body))
                .or_else(|| {
                    served
                        .get_or_insert_with(|| fleet.served())
                        .iter()
                        .find_map(|d| d.same_body(k, &f.body))
                })
                .unwrap_or_else(|| Bytes::copy_from_slice(&f.body));
            let file = ConfigFile {
                body,
                content_type: f.content_type.clone(),
            };
            (k.clone(), file)
        })
        .collect()
}

/// Applies the reported sub-messages; omitted ones keep their last value.
fn apply_reports(e: &mut AgentEntry, msg: &proto::AgentToServer, fleet: &Fleet) -> Changes {
    let mut ch = Changes {
        capabilities: e.set_capabilities(msg.capabilities),
        ..Changes::default()
    };
    if let Some(d) = &msg.agent_description {
        ch.description = e.set_description(description_of(d));
    }
    if let Some(h) = &msg.health {
        ch.health = e.set_health(health_of(h));
    }
    if let Some(c) = &msg.effective_config {
        let effective = effective_of(c, e.pending(), fleet);
        ch.effective_config = e.set_effective_config(effective);
    }
    if let Some(p) = &msg.package_statuses {
        ch.package_statuses = e.set_package_statuses(PackageReport::of(p));
    }
    if let Some(s) = &msg.remote_config_status {
        ch.remote_config_status = e.set_remote_status(RemoteStatus {
            // A copy, not a slice: a slice would keep the whole received message alive.
            hash: Bytes::copy_from_slice(&s.last_remote_config_hash),
            status: RemoteState::from(s.status),
            error: s.error_message.clone(),
        });
    }
    ch
}

/// Processes one message from `conn` and returns the reply to send.
pub fn handle_message(fleet: &Fleet, conn: &mut Connection, msg: proto::AgentToServer) -> Outgoing {
    handle_poll(fleet, conn, msg).0
}

/// A reply that may yet carry a config: the plan it waits for ([`crate::plan_wait`]) and the
/// agent it is for.
#[derive(Debug, Clone, Copy)]
pub struct Awaiting {
    /// The plans that must be done before the reply goes.
    pub ticket: PlanMark,
    /// The agent (its new uid if it was given one).
    pub uid: Uid,
}

/// [`handle_message`] for a poll (HTTP): also says whether the reply should wait for a plan
/// under way before it goes (then [`take_late_config`] adds what the plan handed over).
pub fn handle_poll(
    fleet: &Fleet,
    conn: &mut Connection,
    msg: proto::AgentToServer,
) -> (Outgoing, Option<Awaiting>) {
    let raw_uid = msg.instance_uid.clone();
    let Ok(uid) = <Uid>::try_from(&raw_uid[..]) else {
        tracing::debug!(
            len = raw_uid.len(),
            "rejecting instance_uid of wrong length"
        );
        return (
            bad_request(
                raw_uid.clone(),
                format!("instance_uid must be 16 bytes, got {}", raw_uid.len()),
            ),
            None,
        );
    };

    // Decide whether this message goes under a fresh UID.
    let requested = msg.flags & proto::AgentToServerFlags::RequestInstanceUid as u64 != 0;
    let collides = !requested
        && msg.agent_description.as_ref().is_some_and(|d| {
            fleet.get(&uid).is_some_and(|entry| {
                let e = lock(&entry);
                e.live_elsewhere(conn.id)
                    && e.description().is_some_and(|old| *old != description_of(d))
            })
        });
    let new_uid: Option<Uid> = (requested || collides).then(|| uuid::Uuid::now_v7().into_bytes());
    if let Some(n) = &new_uid {
        tracing::info!(
            old = %uid_text(&uid), new = %uid_text(n),
            reason = if requested { "requested" } else { "duplicate instance_uid" },
            "assigning new instance_uid"
        );
    }
    let target = new_uid.unwrap_or(uid);

    let (entry, created) = fleet.get_or_insert(target, conn.transport);
    let mut events = Vec::with_capacity(3);
    let mut flags = 0u64;
    let remote_config: Option<Arc<RemoteConfig>>;
    let mut packages = None;
    let mut connection_settings = None;
    // Whether the reply could still carry a config a plan is about to decide.
    let could_wait;
    {
        let mut e = lock(&entry);
        if e.is_straggler(
            msg.sequence_num,
            msg.agent_description.is_some(),
            STRAGGLER_WINDOW,
        ) {
            tracing::debug!(agent = %uid_text(&target), "late message after agent_disconnect");
            let reply = Outgoing {
                msg: proto::ServerToAgent {
                    instance_uid: raw_uid,
                    capabilities: SERVER_CAPABILITIES,
                    ..Default::default()
                },
                remote_config: None,
                packages: None,
            };
            return (reply, None);
        }
        if e.seen_on(conn.id, conn.transport, conn.tx.clone()) {
            events.push(FleetEvent::Connected(target));
        }
        let disconnecting = msg.agent_disconnect.is_some();
        let incomplete = lacks_reported_state(msg.capabilities, &msg);
        let was_awaiting = e.awaiting_report();
        let described = msg.agent_description.is_some();
        if e.take_sequence(
            msg.sequence_num,
            created,
            incomplete,
            described,
            disconnecting,
        ) {
            flags |= proto::ServerToAgentFlags::ReportFullState as u64;
        }

        if let Some(reach) = &conn.reach
            && e.offers.reach.as_ref() != Some(reach)
        {
            e.offers.reach = Some(Arc::clone(reach));
        }
        if msg.sequence_num == 0 && msg.agent_description.is_some() {
            // A new agent process: it forgot what it was offered.
            e.offers
                .agent_restarted(msg.capabilities, fleet.clock().now_ms());
        }
        if let Some(s) = &msg.connection_settings_status {
            e.set_settings_status(SettingsStatus::of(s));
        }
        let mut changes = apply_reports(&mut e, &msg, fleet);
        // The full report asked for: a config handed over before it was planned on what may
        // be out of date, so it is withdrawn, and the plan decides again (even if nothing
        // else changed).
        changes.full_state = was_awaiting && !e.awaiting_report();
        if changes.full_state {
            e.withdraw_pending();
        }
        if changes.any() {
            events.push(FleetEvent::Reported(target, changes));
        }

        if disconnecting {
            e.said_goodbye(msg.sequence_num);
            conn.uids.remove(&target);
            events.push(FleetEvent::Disconnected(target));
            remote_config = None;
        } else {
            if conn.transport == Transport::Ws {
                conn.uids.insert(target);
            }
            remote_config = take_config(&mut e, conn.id, fleet).map(|(config, sent)| {
                events.push(sent);
                config
            });
            connection_settings = e.offers.take_due(
                msg.capabilities,
                conn.transport == Transport::Ws,
                &fleet.offer_settings(),
                fleet.clock().now_ms(),
            );
            packages = e.take_offer(conn.id, fleet.clock().now());
            if let Some(p) = &packages {
                events.push(FleetEvent::PackagesSent(e.uid(), *p.all_hash(), conn.id));
            }
        }
        // Not an agent about to send its full state: the plan would not decide on it yet.
        could_wait = !disconnecting
            && remote_config.is_none()
            && flags & proto::ServerToAgentFlags::ReportFullState as u64 == 0
            && has(e.capabilities(), Cap::AcceptsRemoteConfig);
    }
    // The plan decides on what this message told it: Connected and Reported.
    let mut own = 0;
    for ev in events {
        let decides = matches!(ev, FleetEvent::Connected(_) | FleetEvent::Reported(..));
        let n = fleet.emit(ev);
        if decides {
            own = n;
        }
    }
    let awaiting = could_wait
        .then(|| fleet.plan_ticket(own))
        .flatten()
        .map(|ticket| Awaiting {
            ticket,
            uid: target,
        });

    let reply = Outgoing {
        msg: proto::ServerToAgent {
            instance_uid: raw_uid,
            flags,
            capabilities: SERVER_CAPABILITIES,
            agent_identification: new_uid.map(|n| proto::AgentIdentification {
                new_instance_uid: Bytes::copy_from_slice(&n),
            }),
            connection_settings,
            ..Default::default()
        },
        remote_config,
        packages,
    };
    (reply, awaiting)
}

/// After a poll's reply waited for a plan ([`handle_poll`]): adds the config the plan handed
/// over for the agent meanwhile, if any, as [`handle_message`] would have.
pub fn take_late_config(fleet: &Fleet, conn: &Connection, uid: &Uid, reply: &mut Outgoing) {
    let Some(entry) = fleet.get(uid) else {
        return;
    };
    let taken = take_config(&mut lock(&entry), conn.id, fleet);
    if let Some((config, sent)) = taken {
        reply.remote_config = Some(config);
        fleet.emit(sent);
    }
}

/// The config handed over for `e` goes in a reply on connection `conn`: taken from the entry,
/// with the event that records it went out (for a reply and for one that waited alike).
fn take_config(
    e: &mut AgentEntry,
    conn: u64,
    fleet: &Fleet,
) -> Option<(Arc<RemoteConfig>, FleetEvent)> {
    let config = e.take_pending(conn, fleet.clock().now())?;
    let sent = FleetEvent::ConfigSent(e.uid(), *config.hash(), conn);
    Some((config, sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Delivery;
    use proto::{AgentToServer, KeyValue};

    const UID: Uid = [0x11; 16];
    const FULL_CAPS: u64 = Cap::ReportsStatus as u64
        | Cap::AcceptsRemoteConfig as u64
        | Cap::ReportsEffectiveConfig as u64
        | Cap::ReportsHealth as u64
        | Cap::ReportsRemoteConfig as u64;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(proto::AnyValue {
                value: Some(proto::any_value::Value::StringValue(v.into())),
            }),
        }
    }

    fn desc(name: &str) -> proto::AgentDescription {
        proto::AgentDescription {
            identifying_attributes: vec![kv("service.name", name)],
            non_identifying_attributes: vec![kv("host.name", "h1")],
        }
    }

    fn full(seq: u64, hash: &[u8]) -> AgentToServer {
        AgentToServer {
            instance_uid: Bytes::copy_from_slice(&UID),
            sequence_num: seq,
            capabilities: FULL_CAPS,
            agent_description: Some(desc("otelcol")),
            health: Some(proto::ComponentHealth {
                healthy: true,
                ..Default::default()
            }),
            effective_config: Some(proto::EffectiveConfig {
                config_map: Some(proto::AgentConfigMap::default()),
            }),
            remote_config_status: Some(proto::RemoteConfigStatus {
                last_remote_config_hash: Bytes::copy_from_slice(hash),
                status: proto::RemoteConfigStatuses::Applied as i32,
                error_message: String::new(),
            }),
            ..Default::default()
        }
    }

    fn heartbeat(seq: u64) -> AgentToServer {
        AgentToServer {
            instance_uid: Bytes::copy_from_slice(&UID),
            sequence_num: seq,
            capabilities: FULL_CAPS,
            ..Default::default()
        }
    }

    fn http() -> Connection {
        Connection::new(1, Transport::Http, None)
    }

    fn full_state(o: &Outgoing) -> bool {
        o.msg.flags & proto::ServerToAgentFlags::ReportFullState as u64 != 0
    }

    #[test]
    fn reconnect_after_restart_is_awaiting_its_report_until_the_full_report() {
        // After a server restart an agent reconnects with a near-empty hello: the plan must
        // know its config is unknown (a config offered now may be the one it already runs).
        let fleet = Fleet::new();
        let mut c = http();
        assert!(full_state(&handle_message(&fleet, &mut c, heartbeat(7))));
        assert!(fleet.agent(&UID).expect("registered").awaiting_report);
        handle_message(&fleet, &mut c, full(8, &[7; 32]));
        assert!(!fleet.agent(&UID).expect("registered").awaiting_report);
    }

    #[test]
    fn reported_bodies_share_the_served_bytes_or_are_copied_never_sliced() {
        let fleet = Fleet::new();
        let mut c = http();
        let served = Bytes::from(b"receivers: {}\n".repeat(100));
        let report = |seq: u64, body: &Bytes| {
            let mut m = full(seq, b"");
            let mut map = proto::AgentConfigMap::default();
            map.config_map.insert(
                String::new(),
                proto::AgentConfigFile {
                    body: body.clone(),
                    content_type: "text/yaml".into(),
                },
            );
            m.effective_config = Some(proto::EffectiveConfig {
                config_map: Some(map),
            });
            m
        };
        let body_of = |fleet: &Fleet| {
            let a = fleet.agent(&UID).expect("registered");
            a.effective_config
                .expect("reported")
                .get("")
                .expect("the default file")
                .body
                .clone()
        };
        // Reported before any config is assigned: a copy, not a view of the message.
        let own = Bytes::from(served.to_vec());
        handle_message(&fleet, &mut c, report(0, &own));
        assert_ne!(body_of(&fleet).as_ptr(), own.as_ptr());
        // Assigning an equal config makes the stored body share the served bytes ...
        fleet.deliver(
            &UID,
            Some(RemoteConfig::one_yaml_file(served.clone(), [7; 32])),
        );
        assert_eq!(body_of(&fleet).as_ptr(), served.as_ptr());
        // ... and so does a later report of the same bytes, read from a new message.
        handle_message(&fleet, &mut c, report(1, &Bytes::from(served.to_vec())));
        assert_eq!(body_of(&fleet).as_ptr(), served.as_ptr());
        // A different body is copied out of its message.
        let other = Bytes::from_static(b"exporters: {}\n");
        handle_message(&fleet, &mut c, report(2, &other));
        assert_eq!(&body_of(&fleet)[..], &other[..]);
        assert_ne!(body_of(&fleet).as_ptr(), other.as_ptr());

        // An agent with no config assigned (a server restart) whose report equals a file of a
        // served config shares that config's bytes; other bytes are still copied.
        let fleet = Fleet::new();
        let mut c = http();
        fleet.set_served([RemoteConfig::one_yaml_file(served.clone(), [7; 32])]);
        handle_message(&fleet, &mut c, report(0, &Bytes::from(served.to_vec())));
        assert_eq!(body_of(&fleet).as_ptr(), served.as_ptr());
        handle_message(&fleet, &mut c, report(1, &other));
        assert_eq!(&body_of(&fleet)[..], &other[..]);
        assert_ne!(body_of(&fleet).as_ptr(), other.as_ptr());
    }

    #[test]
    fn compression_keeps_last_values_and_no_full_state_in_sequence() {
        let fleet = Fleet::new();
        let mut c = http();
        let r = handle_message(&fleet, &mut c, full(0, b""));
        assert!(!full_state(&r));
        assert_eq!(r.msg.capabilities, SERVER_CAPABILITIES);
        assert_eq!(&r.msg.instance_uid[..], &UID);
        let r = handle_message(&fleet, &mut c, heartbeat(1));
        assert!(!full_state(&r));
        let a = fleet.agent(&UID).unwrap();
        assert_eq!(
            a.description.unwrap().identifying["service.name"],
            "otelcol"
        );
        assert!(a.health.unwrap().healthy);
        assert!(a.effective_config.is_some());
        assert_eq!(a.sequence_num, 1);
    }

    #[test]
    fn gap_and_unknown_ask_full_state_once_and_converge() {
        let fleet = Fleet::new();
        let mut c = http();
        let awaiting = |fleet: &Fleet| fleet.agent(&UID).expect("registered").awaiting_report;
        // Unknown agent, compressed message: ask.
        assert!(full_state(&handle_message(&fleet, &mut c, heartbeat(5))));
        // Next message accepted whatever its number (here: repeated) once it is described.
        let mut repeated = full(5, b"");
        repeated.remote_config_status = None;
        assert!(!full_state(&handle_message(&fleet, &mut c, repeated)));
        assert!(!awaiting(&fleet));
        // In sequence: fine.
        assert!(!full_state(&handle_message(&fleet, &mut c, heartbeat(6))));
        // Gap: ask again, once; the next message is the answer, described or not (this server
        // has the description).
        assert!(full_state(&handle_message(&fleet, &mut c, heartbeat(9))));
        assert!(!full_state(&handle_message(&fleet, &mut c, heartbeat(9))));
        assert!(!awaiting(&fleet));
        // A gap with a complete report does not ask.
        assert!(!full_state(&handle_message(&fleet, &mut c, full(20, b""))));
    }

    #[test]
    fn an_undescribed_message_is_not_the_answer_for_an_agent_never_described_here() {
        // An HTTP agent's polls balanced over replicas: this replica first hears its APPLYING
        // report (another replica sent the config) and asks; the APPLIED report the agent
        // built with it comes next, in sequence, before the answer. Taken for the answer, it
        // would leave an agent without labels to the plan, which would send it the
        // configuration for no labels (seen as a `default` push in the balancer test).
        let fleet = Fleet::new();
        let mut c = http();
        let status = |seq: u64, status: proto::RemoteConfigStatuses| {
            let mut m = heartbeat(seq);
            m.remote_config_status = Some(proto::RemoteConfigStatus {
                last_remote_config_hash: Bytes::copy_from_slice(&[1; 32]),
                status: status as i32,
                error_message: String::new(),
            });
            m
        };
        let awaiting = |fleet: &Fleet| fleet.agent(&UID).expect("registered").awaiting_report;
        let r = handle_message(
            &fleet,
            &mut c,
            status(1, proto::RemoteConfigStatuses::Applying),
        );
        assert!(full_state(&r));
        let r = handle_message(
            &fleet,
            &mut c,
            status(2, proto::RemoteConfigStatuses::Applied),
        );
        assert!(!full_state(&r), "not asked twice in a row");
        assert!(awaiting(&fleet), "still waiting for the described answer");
        let d = RemoteConfig::one_yaml_file(Bytes::from_static(b"a: 2"), [2; 32]);
        assert_eq!(fleet.deliver(&UID, Some(d)), Delivery::Dropped);
        // The answer.
        let r = handle_message(&fleet, &mut c, full(3, &[1; 32]));
        assert!(!full_state(&r));
        assert!(!awaiting(&fleet));
        // A WebSocket client that never describes itself is asked once, not in a loop.
        let fleet = Fleet::new();
        let mut ws = Connection::new(2, Transport::Ws, None);
        assert!(full_state(&handle_message(&fleet, &mut ws, heartbeat(1))));
        for seq in 2..5 {
            assert!(!full_state(&handle_message(
                &fleet,
                &mut ws,
                heartbeat(seq)
            )));
        }
        assert!(awaiting(&fleet));
    }

    #[test]
    fn an_http_agent_whose_full_report_went_to_another_server_is_asked_again() {
        // Polls balanced over several servers: this one sees 1, then 5 (a gap), asks; the full
        // report (6) goes elsewhere, so 8 comes without a description: asked again. Nothing is
        // sent meanwhile: the plan decides again once the report is here.
        let fleet = Fleet::new();
        let mut events = fleet.subscribe();
        let mut c = http();
        handle_message(&fleet, &mut c, full(1, &[1; 32]));
        assert!(full_state(&handle_message(&fleet, &mut c, heartbeat(5))));
        assert!(fleet.agent(&UID).expect("registered").awaiting_report);
        let d = RemoteConfig::one_yaml_file(Bytes::from_static(b"a: 2"), [2; 32]);
        assert_eq!(fleet.deliver(&UID, Some(d.clone())), Delivery::Dropped);
        let r = handle_message(&fleet, &mut c, heartbeat(8));
        assert!(full_state(&r) && r.remote_config.is_none());
        assert!(fleet.agent(&UID).expect("registered").awaiting_report);
        // A repeated number is the client's own numbering: accepted as the answer, and an
        // event the plan follows.
        let r = handle_message(&fleet, &mut c, heartbeat(8));
        assert!(!full_state(&r));
        assert!(!fleet.agent(&UID).expect("registered").awaiting_report);
        let replanned = std::iter::from_fn(|| events.try_recv().ok())
            .any(|e| matches!(e, FleetEvent::Reported(_, ch) if ch.full_state));
        assert!(
            replanned,
            "the full report's arrival is an event the plan follows"
        );
        assert_eq!(fleet.deliver(&UID, Some(d)), Delivery::Pending);
        let r = handle_message(&fleet, &mut c, heartbeat(9));
        assert_eq!(r.remote_config.map(|r| *r.hash()), Some([2; 32]));

        // A config handed over before a gap was planned on what may be out of date (another
        // server may have sent it since): withdrawn when the full report arrives.
        let other = RemoteConfig::one_yaml_file(Bytes::from_static(b"a: 3"), [3; 32]);
        assert_eq!(fleet.deliver(&UID, Some(other)), Delivery::Pending);
        let r = handle_message(&fleet, &mut c, heartbeat(20));
        assert!(full_state(&r) && r.remote_config.is_none());
        let r = handle_message(&fleet, &mut c, full(22, &[2; 32]));
        assert!(!full_state(&r) && r.remote_config.is_none());
        assert_eq!(fleet.agent(&UID).expect("registered").pending_hash, None);
    }

    #[test]
    fn a_websocket_is_never_asked_twice_in_a_row() {
        // Its answer comes on the same connection: whatever it is, it is the answer.
        let fleet = Fleet::new();
        let mut c = Connection::new(2, Transport::Ws, None);
        handle_message(&fleet, &mut c, full(1, b""));
        assert!(full_state(&handle_message(&fleet, &mut c, heartbeat(5))));
        assert!(!full_state(&handle_message(&fleet, &mut c, heartbeat(9))));
        assert!(!fleet.agent(&UID).expect("registered").awaiting_report);
    }

    #[test]
    fn bad_uid_is_bad_request_without_other_fields() {
        let fleet = Fleet::new();
        let mut msg = heartbeat(0);
        msg.instance_uid = Bytes::from_static(b"short");
        let r = handle_message(&fleet, &mut http(), msg);
        let err = r.msg.error_response.as_ref().unwrap();
        assert_eq!(
            err.r#type,
            proto::ServerErrorResponseType::BadRequest as i32
        );
        assert_eq!(r.msg.capabilities, 0);
        assert_eq!(&r.msg.instance_uid[..], b"short");
        assert!(fleet.agents().is_empty());
    }

    #[test]
    fn request_instance_uid_assigns_v7_and_keeps_state() {
        let fleet = Fleet::new();
        let mut c = http();
        let mut m = full(0, b"");
        m.flags = proto::AgentToServerFlags::RequestInstanceUid as u64;
        let r = handle_message(&fleet, &mut c, m);
        let new = r.msg.agent_identification.unwrap().new_instance_uid;
        assert_eq!(new.len(), 16);
        assert_eq!(uuid::Uuid::from_slice(&new).unwrap().get_version_num(), 7);
        assert_eq!(&r.msg.instance_uid[..], &UID);
        let mut hb = heartbeat(1);
        hb.instance_uid = new.clone();
        assert!(!full_state(&handle_message(&fleet, &mut c, hb)));
        assert!(fleet.agent(&UID).is_none());
    }

    #[test]
    fn a_delivered_config_goes_out_once_in_the_next_reply() {
        let fleet = Fleet::new();
        let mut events = fleet.subscribe();
        let mut c = http();
        handle_message(&fleet, &mut c, full(0, b""));
        let d = RemoteConfig::one_yaml_file(Bytes::from_static(b"a: 1"), [7; 32]);
        assert_eq!(fleet.deliver(&UID, Some(d.clone())), Delivery::Pending);
        assert_eq!(fleet.agent(&UID).unwrap().pending_hash, Some([7; 32]));
        let reply = handle_message(&fleet, &mut c, heartbeat(1));
        assert_eq!(reply.remote_config.map(|r| *r.hash()), Some([7; 32]));
        let sent = std::iter::from_fn(|| events.try_recv().ok())
            .find(|e| matches!(e, FleetEvent::ConfigSent(..)));
        assert_eq!(sent, Some(FleetEvent::ConfigSent(UID, [7; 32], c.id)));
        // Once: the plan decides whether it goes again.
        assert!(
            handle_message(&fleet, &mut c, heartbeat(2))
                .remote_config
                .is_none()
        );

        // One the agent reports already is dropped, as is one it no longer accepts.
        fleet.deliver(&UID, Some(d.clone()));
        let mut m = heartbeat(3);
        m.remote_config_status = Some(proto::RemoteConfigStatus {
            last_remote_config_hash: Bytes::copy_from_slice(&[7; 32]),
            status: proto::RemoteConfigStatuses::Applied as i32,
            error_message: String::new(),
        });
        assert!(handle_message(&fleet, &mut c, m).remote_config.is_none());
        let other = RemoteConfig::one_yaml_file(Bytes::from_static(b"a: 2"), [8; 32]);
        fleet.deliver(&UID, Some(other.clone()));
        let mut m = heartbeat(4);
        m.capabilities = Cap::ReportsStatus as u64;
        assert!(handle_message(&fleet, &mut c, m).remote_config.is_none());

        // Withdrawn, or dropped on disconnect: nothing goes out.
        fleet.deliver(&UID, Some(other.clone()));
        fleet.deliver(&UID, None);
        assert!(
            handle_message(&fleet, &mut c, heartbeat(5))
                .remote_config
                .is_none()
        );
        fleet.deliver(&UID, Some(other));
        let mut m = heartbeat(6);
        m.agent_disconnect = Some(proto::AgentDisconnect {});
        assert!(handle_message(&fleet, &mut c, m).remote_config.is_none());
        assert_eq!(fleet.agent(&UID).unwrap().pending_hash, None);
    }

    #[test]
    fn statuses_wait_for_the_planner_until_it_observes_them() {
        let fleet = Fleet::new();
        let mut c = http();
        handle_message(&fleet, &mut c, full(0, &[1; 32]));
        let mut m = heartbeat(1);
        m.remote_config_status = Some(proto::RemoteConfigStatus {
            last_remote_config_hash: Bytes::copy_from_slice(&[2; 32]),
            status: proto::RemoteConfigStatuses::Failed as i32,
            error_message: "bad".into(),
        });
        handle_message(&fleet, &mut c, m);
        handle_message(&fleet, &mut c, full(2, &[1; 32]));
        let seen = fleet.observe(&UID).expect("registered").unread_statuses;
        let states: Vec<_> = seen.iter().map(|s| (s.hash[0], s.status)).collect();
        assert_eq!(
            states,
            vec![
                (1, RemoteState::Applied),
                (2, RemoteState::Failed),
                (1, RemoteState::Applied)
            ]
        );
        assert!(fleet.observe(&UID).unwrap().unread_statuses.is_empty());
    }

    #[test]
    fn agent_disconnect_marks_disconnected() {
        let fleet = Fleet::new();
        let mut c = http();
        handle_message(&fleet, &mut c, full(0, b""));
        let mut m = heartbeat(1);
        m.agent_disconnect = Some(proto::AgentDisconnect {});
        let r = handle_message(&fleet, &mut c, m);
        assert!(r.msg.error_response.is_none());
        assert!(!fleet.agent(&UID).unwrap().connection.connected);
        // A heartbeat queued before the disconnect and sent after it: answered, but
        // the agent stays disconnected.
        let r = handle_message(&fleet, &mut c, heartbeat(1));
        assert!(r.msg.error_response.is_none());
        assert_eq!(&r.msg.instance_uid[..], &UID);
        assert!(!fleet.agent(&UID).unwrap().connection.connected);
        // A restarted agent (full report) reconnects, as does one continuing its numbering.
        handle_message(&fleet, &mut c, full(0, b""));
        assert!(fleet.agent(&UID).unwrap().connection.connected);
        let mut m = heartbeat(1);
        m.agent_disconnect = Some(proto::AgentDisconnect {});
        handle_message(&fleet, &mut c, m);
        handle_message(&fleet, &mut c, heartbeat(2));
        assert!(fleet.agent(&UID).unwrap().connection.connected);
    }
}
