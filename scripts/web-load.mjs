#!/usr/bin/env node
// What N open web pages cost a server: each "browser" loads the page's files once, holds one
// GET /api/v1/stream, and on every change event re-fetches what its view shows, exactly as the
// page does (src/api/web/views.js): half of them the overview (status, configurations, the
// served revision), half the agents table (one page of 50). No dependencies (Node 18+).
//
//   node scripts/web-load.mjs --base http://127.0.0.1:8080 [--token-file F] [--clients 10]
//        [--duration 120]
//
// Prints one JSON line at the end: requests per route, their mean and max latency, events seen.
// scripts/bench-web.sh runs it beside the http-100k fleet benchmark.

import { readFileSync } from "node:fs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const base = args.base;
if (!base) {
  console.error("usage: web-load.mjs --base URL [--token-file F] [--clients N] [--duration S]");
  process.exit(2);
}
const clients = Number(args.clients || 10);
const duration = Number(args.duration || 120) * 1000;
const token = args["token-file"] ? readFileSync(args["token-file"], "utf8").trim() : null;
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const stats = {};
let events = 0;
let failures = 0;
const stop = new AbortController();

/** GET a path, timed under `route`; its body as text (null on failure). */
async function get(route, path) {
  const t = performance.now();
  let body;
  try {
    const resp = await fetch(`${base}${path}`, { headers, signal: stop.signal });
    body = await resp.text();
    if (!resp.ok) {
      failures++;
      return null;
    }
  } catch (_) {
    if (!stop.signal.aborted) failures++;
    return null;
  }
  const ms = performance.now() - t;
  const s = (stats[route] ??= { n: 0, total_ms: 0, max_ms: 0 });
  s.n++;
  s.total_ms += ms;
  s.max_ms = Math.max(s.max_ms, ms);
  return body;
}

async function overview() {
  const text = await get("status", "/api/v1/status");
  const status = text ? JSON.parse(text) : null;
  await Promise.all([
    get("configurations", "/api/v1/configurations"),
    status?.current_revision ? get("revision", `/api/v1/revisions/${status.current_revision}`) : null,
  ]);
}

async function agentsPage() {
  await get("agents", "/api/v1/agents?limit=50");
}

async function browser(i) {
  for (const f of ["/", "/ui/app.js", "/ui/views.js", "/ui/highlight.js", "/ui/style.css", "/ui/icon.svg"]) {
    await get("assets", f);
  }
  const view = i % 2 === 0 ? overview : agentsPage;
  let busy = false;
  let again = false;
  // Like the page: one refresh at a time; a change during one means one more after it.
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    do { again = false; await view(); } while (again && !stop.signal.aborted);
    busy = false;
  };
  while (!stop.signal.aborted) {
    try {
      const resp = await fetch(`${base}/api/v1/stream`, { headers, signal: stop.signal });
      if (!resp.ok) throw new Error(`stream ${resp.status}`);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (frame.includes("event: change")) {
            events++;
            refresh();
          }
        }
      }
    } catch (_) {
      if (stop.signal.aborted) break;
      failures++;
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

setTimeout(() => stop.abort(), duration).unref();
// scripts/bench-web.sh ends it with SIGTERM when the benchmark is over: print the figures then.
process.on("SIGTERM", () => stop.abort());
await Promise.all(Array.from({ length: clients }, (_, i) => browser(i)));
const routes = Object.fromEntries(Object.entries(stats).map(([k, s]) => [k, {
  n: s.n, mean_ms: s.n && s.total_ms ? +(s.total_ms / s.n).toFixed(1) : null, max_ms: +s.max_ms.toFixed(1),
}]));
console.log(JSON.stringify({ clients, duration_s: duration / 1000, events, failures, routes }));
