#!/usr/bin/env python3
"""Run K agents of the real Python OpAMP client (PyPI `opentelemetry-opamp-client`, module
`opentelemetry._opamp`) against one gitamp endpoint, for the interop tests.

Why this exists: gitamp's own simulated agent shares our reading of the spec; a client somebody
else wrote catches the places where we read it the same wrong way. This script uses only the
client's public API (`OpAMPClient`, `OpAMPAgent`, `OpAMPCallbacks`, `HttpTransport`), as of
version 0.5b0, and acts like a small distro would:

* each agent gets distinct identifying (service.name, service.instance.id) and non-identifying
  (host.name, os.type, deployment.environment) attributes;
* on a remote config it reports APPLYING, "applies" the config by writing every entry's raw
  bytes to a temp dir (the client's own decode helper accepts JSON only, and gitamp sends YAML),
  then reports APPLIED with the exact hash it received plus its effective config (= the received
  map). A body containing the fail marker is reported FAILED instead;
* it keeps polling (the client's heartbeat) until the deadline, then stops cleanly (the client
  sends agent_disconnect on stop).

Output: one JSON object per line on stdout (flushed), one per event; the client's own logging
goes to stderr. Exit code 0 unless the arguments were bad.

Quirks of 0.5b0 this script has to live with (and a server must tolerate):
* HTTP only; default request timeout 1 s (a slow answer is a failed request, retried with
  backoff);
* the effective config travels only in full-state messages, so APPLIED + effective config are
  sent as one full-state message;
* a message's sequence_num is fixed when the message is built but the counter moves when any
  message is sent (retries included), so numbers can repeat or skip: against gitamp the
  APPLYING status and the APPLIED full state both carry the same number, and the next
  heartbeat skips one (observed 0, 1, 2, 2, 4, 5...); each skip costs one ReportFullState;
* its first message carries no remote config status or effective config, so a server that
  asks for full state when they are missing asks once on connect;
* heartbeats start only after the first full-state message got an answer.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib.metadata import version as pkg_version
from typing import Any

from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2
from opentelemetry._opamp.transport.base import HttpTransport
from opentelemetry._opamp.transport.requests import RequestsTransport

_print_lock = threading.Lock()
_T0 = time.monotonic()


def emit(event: str, **fields: Any) -> None:
    """Print one JSON event line; thread-safe because every agent has its own worker thread."""
    record = {"event": event, "t": round(time.monotonic() - _T0, 3), **fields}
    line = json.dumps(record, sort_keys=True)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class TracingTransport(HttpTransport):
    """Wraps the client's own `RequestsTransport` (the public `transport=` extension point) to
    record what goes over the wire: sequence numbers sent and server flags received. The client
    handles ReportFullState internally and never shows it to callbacks, so this is the only
    place to observe it."""

    def __init__(self, agent_index: int, trace: bool):
        self._inner = RequestsTransport()
        self._agent = agent_index
        self._trace = trace

    def send(self, **kwargs: Any) -> opamp_pb2.ServerToAgent:
        sent = opamp_pb2.AgentToServer()
        sent.ParseFromString(kwargs["data"])
        try:
            reply = self._inner.send(**kwargs)
        except Exception as exc:
            if self._trace:
                emit("send_failed", agent=self._agent, seq=sent.sequence_num, error=str(exc))
            raise
        full_state = bool(reply.flags & opamp_pb2.ServerToAgentFlags_ReportFullState)
        if self._trace:
            emit(
                "exchange",
                agent=self._agent,
                seq=sent.sequence_num,
                sent_fields=[f.name for f, _ in sent.ListFields()],
                reply_fields=[f.name for f, _ in reply.ListFields()],
                full_state_requested=full_state,
            )
        elif full_state:
            emit("full_state_requested", agent=self._agent, seq=sent.sequence_num)
        return reply


def _safe_file_name(name: str) -> str:
    """Config map keys are arbitrary strings ("" is the usual one); make a file name of them."""
    if name == "":
        return "_default.yaml"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class ApplyingCallbacks(OpAMPCallbacks):
    """What a distro would implement: apply a received config and acknowledge it."""

    def __init__(self, index: int, workdir: str, fail_marker: bytes, state: dict[str, Any]):
        self._index = index
        self._dir = os.path.join(workdir, f"agent-{index}")
        os.makedirs(self._dir, exist_ok=True)
        self._fail_marker = fail_marker
        self._state = state
        self._connected = False

    def on_connect(self, agent: OpAMPAgent, client: OpAMPClient) -> None:
        # Called after every successful HTTP exchange; report only the first.
        if not self._connected:
            self._connected = True
            emit("connected", agent=self._index)

    def on_connect_failed(self, agent: OpAMPAgent, client: OpAMPClient, error: Exception) -> None:
        emit("connect_failed", agent=self._index, error=str(error))

    def on_error(self, agent: OpAMPAgent, client: OpAMPClient, error_response: Any) -> None:
        emit(
            "server_error",
            agent=self._index,
            type=int(error_response.type),
            message=error_response.error_message,
        )

    def on_message(self, agent: OpAMPAgent, client: OpAMPClient, message: Any) -> None:
        remote = message.remote_config
        if remote is None:
            return
        config_hash = bytes(remote.config_hash)
        entries = {name: (bytes(f.body), f.content_type) for name, f in remote.config.config_map.items()}
        self._state["remote_configs"] += 1
        emit(
            "remote_config",
            agent=self._index,
            hash=config_hash.hex(),
            count=self._state["remote_configs"],
            files={
                name: {
                    "content_type": ct,
                    "len": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
                for name, (body, ct) in sorted(entries.items())
            },
        )
        if config_hash == self._state.get("applied_hash"):
            # Already running this exact config: a real agent would not restart anything, and
            # the client would find the status unchanged and send nothing. Record it so the test
            # can count redundant pushes.
            emit("duplicate_config", agent=self._index, hash=config_hash.hex())
            return

        applying = client.update_remote_config_status(
            remote_config_hash=config_hash,
            status=opamp_pb2.RemoteConfigStatuses_APPLYING,
        )
        if applying is not None:
            agent.send(client.build_remote_config_status_response_message(applying))

        failing = [name for name, (body, _) in entries.items() if self._fail_marker and self._fail_marker in body]
        if not entries or failing:
            error = f"config rejected: marker in {failing}" if failing else "empty config map"
            status = client.update_remote_config_status(
                remote_config_hash=config_hash,
                status=opamp_pb2.RemoteConfigStatuses_FAILED,
                error_message=error,
            )
            if status is not None:
                agent.send(client.build_remote_config_status_response_message(status))
            emit("failed", agent=self._index, hash=config_hash.hex(), error=error)
            return

        written = []
        for name, (body, _) in sorted(entries.items()):
            path = os.path.join(self._dir, _safe_file_name(name))
            with open(path, "wb") as fh:
                fh.write(body)
            written.append(path)

        # The client encodes effective-config values as-is for non-JSON content types (str or
        # bytes), one content type for the whole map: take the first entry's.
        content_type = next(iter(sorted(entries.items())))[1][1] or "text/yaml"
        client.update_effective_config({name: body for name, (body, _) in entries.items()}, content_type)
        client.update_remote_config_status(
            remote_config_hash=config_hash,
            status=opamp_pb2.RemoteConfigStatuses_APPLIED,
        )
        # Effective config is only carried by full-state messages in this client.
        agent.send(client.build_full_state_message())
        self._state["applied_hash"] = config_hash
        emit("applied", agent=self._index, hash=config_hash.hex(), files=written)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:4320/v1/opamp")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--duration", type=float, default=30.0, help="hard deadline in seconds")
    p.add_argument(
        "--linger",
        type=float,
        default=None,
        help="exit this many seconds after every agent applied a config (default: run to the deadline)",
    )
    p.add_argument("--heartbeat", type=float, default=1.0, help="poll/heartbeat interval, seconds")
    p.add_argument("--timeout-ms", type=int, default=1000, help="HTTP request timeout (client default 1000)")
    p.add_argument("--workdir", default=None, help="where applied configs are written (default: a temp dir)")
    p.add_argument("--name-prefix", default="py-interop")
    p.add_argument("--environment", default="interop-test")
    p.add_argument("--fail-marker", default="gitamp-test-fail")
    p.add_argument("--trace", action="store_true", help="emit one event per HTTP exchange")
    args = p.parse_args(argv)
    if args.agents < 1 or args.agents > 200:
        p.error("--agents must be within 1..200")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    workdir = args.workdir or tempfile.mkdtemp(prefix="gitamp-py-agents-")
    deadline = time.monotonic() + args.duration
    os_type = {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(sys.platform, sys.platform)

    agents: list[tuple[OpAMPAgent, dict[str, Any]]] = []
    for i in range(args.agents):
        service_name = f"{args.name_prefix}-{i}"
        instance_id = f"{args.name_prefix}-instance-{i}"
        client = OpAMPClient(
            endpoint=args.endpoint,
            timeout_millis=args.timeout_ms,
            agent_identifying_attributes={
                "service.name": service_name,
                "service.instance.id": instance_id,
            },
            agent_non_identifying_attributes={
                "host.name": f"py-host-{i}",
                "os.type": os_type,
                "deployment.environment": args.environment,
                "agent.index": i,
            },
            transport=TracingTransport(i, args.trace),
        )
        state: dict[str, Any] = {"remote_configs": 0, "applied_hash": None}
        agent = OpAMPAgent(
            interval=args.heartbeat,
            callbacks=ApplyingCallbacks(i, workdir, args.fail_marker.encode(), state),
            client=client,
        )
        # The client keeps the instance uid private (no accessor in 0.5b0); it is read here only
        # so the test can match this agent with the registry entry.
        uid = getattr(client, "_instance_uid", b"")
        emit(
            "start",
            agent=i,
            instance_uid=uid.hex(),
            service_name=service_name,
            service_instance_id=instance_id,
            host_name=f"py-host-{i}",
            os_type=os_type,
            environment=args.environment,
            client_version=pkg_version("opentelemetry-opamp-client"),
            workdir=workdir,
        )
        agent.start()
        # start() registers stop() with atexit; we stop explicitly, so avoid a second
        # agent_disconnect at interpreter exit.
        atexit.unregister(agent.stop)
        agents.append((agent, state))

    reason = "deadline"
    all_applied_at = None
    while time.monotonic() < deadline:
        if args.linger is not None:
            if all_applied_at is None and all(s["applied_hash"] for _, s in agents):
                all_applied_at = time.monotonic()
            if all_applied_at is not None and time.monotonic() - all_applied_at >= args.linger:
                reason = "all_applied"
                break
        time.sleep(0.05)

    for i, (agent, state) in enumerate(agents):
        agent.stop(timeout=2)
        emit(
            "stopped",
            agent=i,
            remote_configs=state["remote_configs"],
            applied_hash=(state["applied_hash"] or b"").hex(),
        )
    emit("exit", reason=reason)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
