"""An OpAMP agent over WebSocket built from parts we did not write: the `websockets` library
(a strict RFC 6455 implementation) for the transport and the OpAMP protobuf classes shipped in
`opentelemetry-opamp-client`. Driven by crates/gitamp-opamp/tests/agent_interop_python.rs.

It exercises the server's own WebSocket codec: a plain message, a fragmented one, a ping, a
text frame, a config push (read and acknowledged), and the close handshake. Every step prints
one JSON line; the Rust test checks them. Exits non-zero on the first unexpected answer.
"""

import argparse
import hashlib
import json
import sys
import uuid

from websockets.sync.client import connect

from opentelemetry._opamp.proto import opamp_pb2, anyvalue_pb2

REPORTS_STATUS = 0x1
ACCEPTS_REMOTE_CONFIG = 0x2
REPORTS_EFFECTIVE_CONFIG = 0x4
REPORTS_REMOTE_CONFIG = 0x1000
CAPS = REPORTS_STATUS | ACCEPTS_REMOTE_CONFIG | REPORTS_EFFECTIVE_CONFIG | REPORTS_REMOTE_CONFIG


def emit(**fields):
    print(json.dumps(fields), flush=True)


def frame(msg):
    # OpAMP WebSocket framing: varint header 0, then the message.
    return b"\x00" + msg.SerializeToString()


def unframe(data):
    if not isinstance(data, bytes) or data[:1] != b"\x00":
        raise SystemExit(f"server frame without header 0: {data!r:.80}")
    reply = opamp_pb2.ServerToAgent()
    reply.ParseFromString(data[1:])
    return reply


def kv(key, value):
    return anyvalue_pb2.KeyValue(key=key, value=anyvalue_pb2.AnyValue(string_value=value))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--name", default="py-ws")
    args = ap.parse_args()
    uid = uuid.uuid4().bytes
    seq = 0

    def message(**kw):
        nonlocal seq
        m = opamp_pb2.AgentToServer(instance_uid=uid, sequence_num=seq, capabilities=CAPS, **kw)
        seq += 1
        return m

    with connect(args.url, max_size=8 * 1024 * 1024) as ws:
        emit(event="start", instance_uid=uid.hex())
        hello = message(
            agent_description=opamp_pb2.AgentDescription(
                identifying_attributes=[kv("service.name", args.name)],
                non_identifying_attributes=[kv("os.type", "linux")],
            ),
            remote_config_status=opamp_pb2.RemoteConfigStatus(
                status=opamp_pb2.RemoteConfigStatuses_UNSET
            ),
            effective_config=opamp_pb2.EffectiveConfig(config_map=opamp_pb2.AgentConfigMap()),
        )
        ws.send(frame(hello))
        reply = unframe(ws.recv(timeout=10))
        emit(event="reply", uid=reply.instance_uid.hex(), capabilities=reply.capabilities)

        # The same kind of message in three fragments.
        data = frame(message())
        ws.send([data[:1], data[1:4], data[4:]])
        reply = unframe(ws.recv(timeout=10))
        emit(event="fragmented_reply", uid=reply.instance_uid.hex())

        # A ping gets its pong.
        pong = ws.ping(b"interop")
        emit(event="pong", ok=pong.wait(timeout=10))

        # A text frame is not OpAMP: an error reply, the connection stays.
        ws.send("hello")
        reply = unframe(ws.recv(timeout=10))
        emit(event="text_reply", error=reply.HasField("error_response"))

        # Tell the test we are ready for a push, then wait for it and acknowledge it.
        ws.send(frame(message()))
        unframe(ws.recv(timeout=10))
        emit(event="ready")
        while True:
            pushed = unframe(ws.recv(timeout=30))
            if pushed.HasField("remote_config"):
                break
        rc = pushed.remote_config
        files = {k: f.body for k, f in rc.config.config_map.items()}
        emit(
            event="pushed",
            hash=rc.config_hash.hex(),
            files={k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
        )
        ack = message(
            remote_config_status=opamp_pb2.RemoteConfigStatus(
                last_remote_config_hash=rc.config_hash,
                status=opamp_pb2.RemoteConfigStatuses_APPLIED,
            ),
            effective_config=opamp_pb2.EffectiveConfig(config_map=rc.config),
        )
        ws.send(frame(ack))
        unframe(ws.recv(timeout=10))

        ws.close(code=1000, reason="done")
        emit(
            event="closed",
            sent=ws.close_code,
            received=ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
