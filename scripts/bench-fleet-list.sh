#!/usr/bin/env bash
# The whole-fleet agent list on a replica (src/api/fleet.rs), measured: one `gitamp serve`
# (release) on a database whose `agents` table holds N agents another replica holds (a fake one,
# kept alive by a heartbeat loop), then the time of the first page of 100, of 100 pages (one
# each 50 ms, printed: never asserted), how many times the table was read meanwhile (the
# server's debug log), filtered and sorted pages and /metrics, and the process's RSS.
#
#   N=60000 GITAMP_TEST_POSTGRES=postgres://postgres@127.0.0.1:15432/postgres \
#     scripts/bench-fleet-list.sh          # after `cargo build --release`
#
# Uses (and drops first) the database `fleetlist_bench` of that cluster, API port 18080.
set -u
N=${N:-60000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/gitamp}
ADMIN=${GITAMP_TEST_POSTGRES:?set GITAMP_TEST_POSTGRES to the test cluster\'s admin URL}
DB="${ADMIN%/*}/fleetlist_bench"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK" || exit 1
git init -q --bare -b main repo.git
git init -q -b main work
cp -r "$ROOT/example-repo/." work/
git -C work add -A
git -C work -c user.name=bench -c user.email=bench@example.com commit -qm example
git -C work push -q ../repo.git main
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS fleetlist_bench WITH (FORCE)" -c "CREATE DATABASE fleetlist_bench" 2>/dev/null
rm -rf data; mkdir data
RUST_LOG=info,gitamp::api::fleet=debug $BIN serve --data-dir data --repo "file://$WORK/repo.git" --poll 3600 \
  --opamp-listen 127.0.0.1:0 --api-listen 127.0.0.1:18080 --store "$DB" >server.log 2>&1 &
PID=$!
for _ in $(seq 60); do curl -sf localhost:18080/readyz >/dev/null && break; sleep 0.5; done
HASH=$(curl -s localhost:18080/api/v1/configurations/linux-production | python3 -c 'import json,sys; print(json.load(sys.stdin)["hash"])')
echo "served; linux-production hash $HASH"
psql -q "$DB" <<SQL
INSERT INTO replicas (id, opamp_address, api_address, leader, agents, started_at, heartbeat_at)
VALUES ('fake-replica', '127.0.0.1:1', '127.0.0.1:2', false, $N, 0, (extract(epoch from now())*1000)::bigint);
INSERT INTO agents (instance_uid, labels, description, capabilities, health, reported_hash,
  remote_config_status, sent_hash, sent_at, failed_hashes, applied_hash, connected, last_seen, replica)
SELECT lpad(to_hex(g), 32, '0'),
  json_build_object('service.name','checkout','host.name','host-'||g,'os.type','linux','deployment.environment','production')::text,
  json_build_object('identifying', json_build_object('service.name','checkout'),
    'non_identifying', json_build_object('host.name','host-'||g,'os.type','linux','deployment.environment','production'))::text,
  4103, '{"healthy":true,"start_time_unix_nano":0,"last_error":"","status":"","status_time_unix_nano":0,"components":{}}',
  '$HASH', 'APPLIED', '$HASH', 1, '[]', '$HASH', true, (extract(epoch from now())*1000)::bigint, 'fake-replica'
FROM generate_series(1, $N) g;
ANALYZE agents;
SQL
( while kill -0 "$PID" 2>/dev/null; do psql -q "$DB" -c "UPDATE replicas SET heartbeat_at = (extract(epoch from now())*1000)::bigint WHERE id='fake-replica'" >/dev/null 2>&1; sleep 1; done ) &
HB=$!
reads() { grep -c "Read the other replicas' rows" server.log; }
sleep 1
t() { curl -s -o /dev/null -D "$WORK/h" -w '%{time_total}' "localhost:18080$1"; }
echo "cold page of 100: $(t '/api/v1/agents?limit=100') s ($(grep -i gitamp-fleet: h | tr -d '\r'))"
B=$(reads)
START=$(date +%s.%N)
for _ in $(seq 100); do T=$(t "/api/v1/agents?limit=100&offset=$((N/2))"); echo "$T"; sleep 0.05; done > times.txt
END=$(date +%s.%N)
A=$(reads)
echo "100 pages of 100 (one each 50 ms) (offset N/2) in $(python3 -c "print(round($END-$START,2))") s; per request: $(sort -n times.txt | python3 -c 'import sys; v=[float(x) for x in sys.stdin]; print("min %.3f median %.3f max %.3f s" % (v[0], v[len(v)//2], v[-1]))')"
echo "table reads during them: $((A-B)) (of N=$N rows each)"
echo "filtered q=host-4242 : $(t '/api/v1/agents?q=host-4242') s; status=synced sort=-host: $(t '/api/v1/agents?status=synced&sort=-host') s"
curl -s "localhost:18080/api/v1/agents?limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("total", d["total"], "first", d["items"][0]["status"], d["items"][0]["replica"])'
echo "metrics: $(t /metrics) s; $(curl -s localhost:18080/metrics | grep 'fleet_agents_by_status{status="synced"}')"
grep -oE "(read_ms|took_ms)=[0-9]+" server.log | tail -6 | tr "\n" " "; echo
ps -o rss=,cputime= -p "$PID"
kill "$HB"; kill "$PID"; wait "$PID" 2>/dev/null
