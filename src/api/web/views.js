// The page's views. Each takes its container, the route's parts and query, draws what the API
// says and answers { refresh(changed) }: what to re-fetch when the stream reports a change.
// Every figure comes from the API; nothing here computes fleet state of its own.

import { api, h, fill, setQuery } from "/ui/app.js";
import { yaml, diff } from "/ui/highlight.js";

const PAGE = 50;

// ---- small helpers -------------------------------------------------------------------------

const enc = encodeURIComponent;

function short(rev) {
  if (!rev) return "";
  return rev.startsWith("content-") ? rev : rev.slice(0, 12);
}

function when(text) {
  if (!text) return "never";
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) return text;
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  const ago = s < 60 ? `${Math.max(s, 0)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago`
    : s < 86400 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
  return h("time", { datetime: text, title: t.toLocaleString() }, ago);
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  return v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(1)} s`;
}

/** A status as colour and word (never colour alone). */
function badge(status) {
  return h("span", { class: `badge st-${status}` }, status);
}

function dl(rows) {
  return h("dl", { class: "facts" }, rows.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

function table(caption, head, rows, empty = "None.", cls = null) {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  // Focusable, so that a table wider than a narrow window can be scrolled from the keyboard.
  return h("div", { class: "scroll", tabindex: 0, role: "region", "aria-label": `${caption} (table)` },
    h("table", { class: cls },
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

export function notFound(message) {
  return h("div", { class: "notfound" },
    h("h1", {}, "Not found"),
    h("p", { role: "alert" }, message),
    h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

/** The commit's page on its Git host, when the remote's URL names GitHub or a GitLab. */
export function commitUrl(source, rev) {
  if (!source || !rev || !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(rev)) return null;
  let host;
  let path;
  let m = source.match(/^(?:https?|ssh|git):\/\/(?:[^@/]+@)?([^/:]+)(?::\d+)?\/(.+)$/);
  if (m) [, host, path] = m;
  else if ((m = source.match(/^[^@/]+@([^:/]+):(.+)$/))) [, host, path] = m;
  else return null;
  path = path.replace(/\.git\/?$/, "").replace(/\/$/, "");
  if (!/^[\w.-]+(\/[\w.-]+)+$/.test(path)) return null;
  if (host === "github.com") return `https://${host}/${path}/commit/${rev}`;
  if (/(^|\.)gitlab\./.test(host)) return `https://${host}/${path}/-/commit/${rev}`;
  return null;
}

function revisionLink(source, rev) {
  if (!rev) return "–";
  const url = commitUrl(source, rev);
  return h("span", { class: "rev" },
    h("a", { href: `#/revisions/${enc(rev)}` }, h("code", {}, short(rev))),
    url ? [" ", h("a", { href: url, rel: "noreferrer", target: "_blank" }, "commit ↗")] : null);
}

/** A commit's subject and author, when the server knows them. */
function commitText(c) {
  if (!c) return null;
  return h("span", { class: "commit" }, h("q", {}, c.subject), ` by ${c.author}`, c.authored_at ? [", ", when(c.authored_at)] : null);
}

function diagnostics(list) {
  return table("Diagnostics", ["Where", "Code", "Severity", "Message"],
    list.map((d) => [
      h("code", {}, `${d.file}:${d.line}${d.column ? `:${d.column}` : ""}`),
      h("code", {}, d.code), d.severity, d.message]),
    "No diagnostics.", "diagnostics");
}

/** A horizontal bar of segments [{cls, value, label}] out of `total`. */
function bar(segments, total, label) {
  const svg = h("svg", { class: "bar", viewBox: "0 0 100 10", preserveAspectRatio: "none", role: "img", "aria-label": label });
  svg.append(h("rect", { svg: true, class: "track", x: 0, y: 0, width: 100, height: 10 }));
  let x = 0;
  for (const s of segments) {
    if (!total || !s.value) continue;
    const w = (100 * s.value) / total;
    svg.append(h("rect", { svg: true, class: s.cls, x: x.toFixed(3), y: 0, width: w.toFixed(3), height: 10 }));
    x += w;
  }
  return svg;
}

function phaseOf(rollout) {
  const p = rollout.phase;
  if (typeof p === "string") return { phase: p, reason: rollout.reason };
  return p || { phase: "unknown" };
}

/** One configuration's rollout: batches, applied / failed / waiting, halted or rolled back. */
function rolloutProgress(name, r, counts) {
  if (!r) return h("p", { class: "muted" }, "No rollout.");
  const phase = phaseOf(r);
  const rolledBack = counts ? counts["rolled-back"] || 0 : 0;
  const text = `${r.synced}/${r.total} applied, ${r.failed} failed, ${r.pending} waiting` +
    `${rolledBack ? `, ${rolledBack} rolled back` : ""}; batch ${r.batch}`;
  return h("div", { class: "rollout", "data-configuration": name, "data-phase": phase.phase },
    h("div", { class: "rollout-head" },
      h("strong", {}, name), " ", h("span", { class: `badge ph-${phase.phase}` }, phase.phase),
      h("span", { class: "rollout-text" }, text)),
    bar([
      { cls: "seg-synced", value: r.synced },
      { cls: "seg-failed", value: r.failed + (r.excused || 0) },
      { cls: "seg-pending", value: r.pending },
    ], r.total, `${name}: ${text}, ${phase.phase}`),
    phase.reason ? h("p", { class: "error" }, phase.reason) : null);
}

/** Agents per status as a chart: a bar per status, each a link to the agents in it. */
function statusChart(byStatus) {
  const entries = Object.entries(byStatus);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  return h("ul", { class: "chart", "aria-label": "Agents by status" },
    entries.map(([status, n]) => h("li", { "data-status": status },
      h("a", { href: `#/agents?status=${enc(status)}`, class: "chart-label" }, badge(status)),
      bar([{ cls: `seg-${status}`, value: n }], max, `${n} ${status}`),
      h("span", { class: "count" }, String(n)))));
}

function convergenceText(c) {
  if (!c) return "–";
  return `${c.applied}/${c.targeted} applied (${c.state}), push → applied p50 ${ms(c.latency.p50_ms)}, p99 ${ms(c.latency.p99_ms)}`;
}

/** Whether one of `keys` moved in a stream event (or everything did: "all"). */
function moved(keys, changed) {
  return changed.has("all") || keys.some((k) => changed.has(k));
}

/**
 * Redraw `el` with `draw()` only when `data` differs from the last drawn, keeping the
 * <details> a reader opened: a plan anywhere in the fleet must not collapse what they read.
 */
function redraw(el, state, data, draw) {
  const text = JSON.stringify(data);
  if (text === state.last) return;
  state.last = text;
  const opened = new Set([...el.querySelectorAll("details[open] > summary")].map((s) => s.textContent));
  draw();
  for (const d of el.querySelectorAll("details")) {
    const summary = d.querySelector("summary");
    if (summary && opened.has(summary.textContent)) d.open = true;
  }
}

// ---- overview ----------------------------------------------------------------------------

async function overview(el) {
  document.title = "Overview · gitamp";
  const draw = async () => {
    const [status, configs] = await Promise.all([api("/api/v1/status"), api("/api/v1/configurations")]);
    let served = null;
    if (status.current_revision) {
      try {
        served = await api(`/api/v1/revisions/${enc(status.current_revision)}`);
      } catch (_) { /* history may have dropped it */ }
    }
    const rejectedIsTip = status.last_rejected &&
      (!status.accepted_at || status.last_rejected.at > status.accepted_at);
    fill(el,
      h("h1", {}, "Overview"),
      h("div", { class: "grid" },
        section("Source",
          dl([
            ["Remote", h("code", { id: "source" }, status.source)],
            ["Ref", status.ref],
            ["Path", status.sub_path],
            ["Served revision", h("span", { id: "served-revision", "data-revision": status.current_revision || "" }, revisionLink(status.source, status.current_revision))],
            status.current_commit ? ["Commit", h("span", { id: "served-commit" }, commitText(status.current_commit))] : null,
            ["Accepted", when(status.accepted_at)],
            ["Reached", served && served.convergence ? h("span", { id: "served-convergence" }, convergenceText(served.convergence)) : "–"],
            ["Last fetch", h("span", {}, when(status.last_fetch), status.last_fetch_duration_ms !== null ? ` (${ms(status.last_fetch_duration_ms)})` : "")],
            status.last_error ? ["Fetch error", h("span", { class: "error", id: "fetch-error" }, status.last_error, status.consecutive_failures ? ` (${status.consecutive_failures} in a row)` : "")] : null,
            status.warnings.length ? ["Warnings", `${status.warnings.length}`] : null,
          ])),
        section("Agents",
          h("p", { id: "agent-totals" }, `${status.agents.total} agents, ${status.agents.connected} connected, ${status.configurations} configurations`),
          statusChart(status.agents.by_status))),
      section("Rollouts",
        h("div", { id: "rollouts" },
          configs.items.length === 0 ? h("p", { class: "muted" }, "No configuration is served.")
            : configs.items.map((c) => rolloutProgress(c.name, c.rollout, c.counts)))),
      status.last_rejected ? section("Last rejected revision",
        h("div", { id: "last-rejected", "data-revision": status.last_rejected.revision },
          h("p", {}, revisionLink(status.source, status.last_rejected.revision), " ",
            h("span", { class: "badge rejected" }, "rejected"), " ", when(status.last_rejected.at),
            ` with ${status.last_rejected.errors} error(s)`,
            rejectedIsTip ? h("strong", {}, " — the repository's tip: agents keep the served revision") : ""),
          status.last_rejected.commit ? h("p", {}, commitText(status.last_rejected.commit)) : null,
          diagnostics(status.last_rejected.diagnostics))) : null);
  };
  await draw();
  return { refresh: (changed) => (moved(["revision", "plan", "fetch", "fetch_error", "rejected", "agents", "connected", "by_status"], changed) ? draw() : Promise.resolve()) };
}

// ---- agents ------------------------------------------------------------------------------

function agentName(a) {
  return a.labels["service.name"] || a.labels["host.name"] || a.uid.slice(0, 8);
}

async function agents(el, parts, query) {
  if (parts.length > 0) return agent(el, parts[0]);
  document.title = "Agents · gitamp";
  const [status, configs] = await Promise.all([api("/api/v1/status"), api("/api/v1/configurations")]);
  const field = (id, label, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);
  const statusSel = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    [...Object.keys(status.agents.by_status), "unknown"].map((s) => h("option", { value: s }, s)));
  const configSel = h("select", { id: "f-configuration", name: "configuration" },
    h("option", { value: "" }, "any"),
    configs.items.map((c) => h("option", { value: c.name }, c.name)));
  const selector = h("input", { id: "f-selector", name: "selector", type: "text", placeholder: "env=prod,region in (eu)", spellcheck: "false" });
  const text = h("input", { id: "f-q", name: "q", type: "search", placeholder: "name, host or id" });
  const sort = h("select", { id: "f-sort", name: "sort" },
    [["id", "id"], ["name", "name"], ["host", "host"], ["status", "status"], ["configuration", "configuration"], ["-last_seen", "last seen (newest)"], ["last_seen", "last seen (oldest)"]]
      .map(([v, l]) => h("option", { value: v }, l)));
  statusSel.value = query.get("status") || "";
  configSel.value = query.get("configuration") || "";
  selector.value = query.get("selector") || "";
  text.value = query.get("q") || "";
  sort.value = query.get("sort") || "id";
  let offset = Number(query.get("offset")) || 0;
  const form = h("form", { role: "search", class: "filters", "aria-label": "Filter agents" },
    field("f-status", "Status", statusSel), field("f-configuration", "Configuration", configSel),
    field("f-selector", "Label selector", selector), field("f-q", "Search", text), field("f-sort", "Sort by", sort));
  form.addEventListener("submit", (e) => e.preventDefault());
  const result = h("div", { id: "agents-result", "aria-live": "polite" });
  fill(el, h("h1", {}, "Agents"), form, result);

  const params = () => {
    const q = new URLSearchParams();
    for (const [k, v] of [["status", statusSel.value], ["configuration", configSel.value], ["selector", selector.value.trim()], ["q", text.value.trim()]]) {
      if (v) q.set(k, v);
    }
    if (sort.value !== "id") q.set("sort", sort.value);
    if (offset) q.set("offset", String(offset));
    return q;
  };
  let seq = 0;
  const draw = async () => {
    const q = params();
    setQuery("/agents", q);
    q.set("limit", String(PAGE));
    const mine = ++seq;
    let page;
    try {
      page = await api(`/api/v1/agents?${q}`);
    } catch (e) {
      if (mine !== seq) return;
      if (e.status === 400) {
        fill(result, h("p", { class: "error", role: "alert" }, e.message));
        return;
      }
      throw e;
    }
    if (mine !== seq) return; // a newer request is on its way
    const first = page.total === 0 ? 0 : page.offset + 1;
    const last = page.offset + page.items.length;
    const pager = h("div", { class: "pager" },
      h("button", { type: "button", id: "agents-prev", disabled: page.offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); draw(); } }, "Previous"),
      h("span", { id: "agents-count" }, `${first}–${last} of ${page.total}`),
      h("button", { type: "button", id: "agents-next", disabled: last >= page.total, onclick: () => { offset += PAGE; draw(); } }, "Next"));
    // A live redraw must not take the keyboard focus away from the pager.
    const focused = result.contains(document.activeElement) ? document.activeElement.id : null;
    fill(result,
      table("Agents", ["Agent", "Status", "Configuration", "Host", "Transport", "Last seen"],
        page.items.map((a) => [
          h("a", { href: `#/agents/${enc(a.uid)}`, title: a.uid }, agentName(a)),
          badge(a.status),
          a.configuration ? h("a", { href: `#/configurations/${enc(a.configuration)}` }, a.configuration) : "–",
          a.labels["host.name"] || "–",
          `${a.transport}${a.connected ? "" : " (gone)"}`,
          when(a.last_seen),
        ]), "No agent matches."),
      pager);
    if (focused) document.getElementById(focused)?.focus();
  };
  let typing = null;
  const again = () => { offset = 0; draw().catch(() => {}); };
  for (const c of [statusSel, configSel, sort]) c.addEventListener("change", again);
  for (const c of [selector, text]) {
    c.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(again, 300); });
  }
  await draw();
  return { refresh: (changed) => (moved(["plan", "agents", "connected"], changed) ? draw() : Promise.resolve()) };
}

function healthTree(name, health) {
  if (!health) return h("p", { class: "muted" }, "The agent reports no health.");
  const node = (n, hl) => h("li", {},
    h("span", { class: `badge ${hl.healthy ? "st-synced" : "st-failed"}` }, hl.healthy ? "healthy" : "unhealthy"),
    " ", h("code", {}, n), hl.status ? ` ${hl.status}` : "",
    hl.last_error ? h("span", { class: "error" }, ` ${hl.last_error}`) : "",
    Object.keys(hl.components || {}).length
      ? h("ul", {}, Object.entries(hl.components).map(([k, v]) => node(k, v))) : null);
  return h("ul", { class: "tree" }, node(name, health));
}

async function agent(el, id) {
  const state = {};
  const draw = async () => {
    const a = await api(`/api/v1/agents/${enc(id)}`);
    redraw(el, state, a, () => drawAgent(el, a));
  };
  await draw();
  return { refresh: (changed) => (moved(["plan", "events"], changed) ? draw() : Promise.resolve()) };
}

function drawAgent(el, a) {
  const name = agentName(a);
  document.title = `${name} · Agents · gitamp`;
  const connections = a.events.filter((e) => e.kind === "connected" || e.kind === "disconnected");
  let config;
  if (!a.desired_config && !a.effective_config) config = h("p", { class: "muted" }, "No configuration selects this agent, and it reports none.");
  else {
    config = [
      h("p", { id: "config-verdict" }, a.config_same_meaning === true ? "The agent runs what it was sent (same meaning)."
        : a.config_same_meaning === false ? "The agent's config differs in meaning from the desired one."
          : a.config_compare_error || (a.effective_config ? "" : "The agent reports no effective config.")),
      a.config_diff !== null && a.config_diff !== undefined
        ? (a.config_diff === "" ? h("p", { class: "muted" }, "Desired and effective configs are identical.")
          : h("pre", { class: "code diff", id: "config-diff", tabindex: 0, "aria-label": "Desired (−) against effective (+) config" }, diff(a.config_diff)))
        : null,
      a.config_differences && a.config_differences.length
        ? h("details", { open: a.config_differences.length <= 5 },
          h("summary", {}, `${a.config_differences.length} difference(s) by meaning`),
          table("Differences by meaning", ["Path", "Change"], a.config_differences.map((d) => [h("code", {}, d.path ?? ""), d.kind ?? JSON.stringify(d)]))) : null,
      a.desired_config ? h("details", {}, h("summary", {}, "Desired config (masked)"), h("pre", { class: "code", tabindex: 0 }, yaml(a.desired_config))) : null,
      a.effective_config ? h("details", {}, h("summary", {}, "Effective config (masked)"), h("pre", { class: "code", tabindex: 0 }, yaml(a.effective_config))) : null,
    ];
  }
  fill(el,
    h("p", { class: "crumbs" }, h("a", { href: "#/agents" }, "Agents"), " / "),
    h("h1", {}, name, " ", badge(a.status)),
    h("div", { class: "grid" },
      section("Agent", dl([
        ["ID", h("code", {}, a.uid)],
        ["Status", h("span", {}, badge(a.status), a.reason ? ` ${a.reason}` : "")],
        ["Configuration", a.configuration ? h("a", { href: `#/configurations/${enc(a.configuration)}` }, a.configuration) : "–"],
        ["Transport", `${a.transport}, ${a.connected ? "connected" : "disconnected"}`],
        ["Connected since", when(a.connected_since)],
        ["Last seen", when(a.last_seen)],
        ["Reported", a.remote_status ? `${a.remote_status}${a.remote_error ? `: ${a.remote_error}` : ""}` : "–"],
        ["Desired hash", a.desired_hash ? h("code", {}, a.desired_hash.slice(0, 16)) : "–"],
        ["Reported hash", a.reported_hash ? h("code", {}, a.reported_hash.slice(0, 16)) : "–"],
      ])),
      section("Labels", table("Labels", ["Label", "Value"], Object.entries(a.labels).map(([k, v]) => [h("code", {}, k), v]), "No labels.")),
      section("Capabilities", a.capabilities.names.length ? h("ul", { class: "caps" }, a.capabilities.names.map((n) => h("li", {}, n))) : h("p", { class: "muted" }, "None reported.")),
      section("Health", healthTree(name, a.health))),
    section("Desired and effective config", config),
    section("Connection history", table("Connection history", ["When", "Event", "Message"], connections.map((e) => [when(e.at), e.kind, e.message]), "No connection events in the recent history.")),
    section("Recent events", table("Recent events", ["When", "Kind", "Message"], a.events.map((e) => [when(e.at), e.kind, e.message]), "No recent events.")));
}

// ---- configurations ----------------------------------------------------------------------

function selectorText(sel) {
  if (!sel || typeof sel !== "object") return "all agents";
  const parts = [];
  for (const [k, v] of Object.entries(sel.matchLabels || {})) parts.push(`${k}=${v}`);
  for (const e of sel.matchExpressions || []) {
    parts.push(`${e.key} ${e.operator}${e.values && e.values.length ? ` (${e.values.join(", ")})` : ""}`);
  }
  return parts.length ? parts.join(", ") : "all agents";
}

function policyText(p) {
  if (!p || typeof p !== "object") return "–";
  return Object.entries(p).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || "defaults";
}

async function configurations(el, parts) {
  if (parts.length > 0) return configuration(el, parts[0]);
  document.title = "Configurations · gitamp";
  const draw = async () => {
    const list = await api("/api/v1/configurations");
    fill(el, h("h1", {}, "Configurations"),
      list.revision ? h("p", {}, "Of the served revision ", h("code", {}, short(list.revision)), ".") : null,
      table("Configurations", ["Name", "Priority", "Selector", "Matched", "Rollout"],
        list.items.map((c) => [
          h("a", { href: `#/configurations/${enc(c.name)}` }, c.name),
          String(c.priority), selectorText(c.selector),
          h("a", { href: `#/agents?configuration=${enc(c.name)}` }, String(c.matched_agents)),
          rolloutProgress(c.name, c.rollout, c.counts)]),
        "No configuration is served."));
  };
  await draw();
  return { refresh: (changed) => (moved(["plan", "revision"], changed) ? draw() : Promise.resolve()) };
}

async function configuration(el, name) {
  let yamlText = null;
  const state = {};
  const draw = async (withYaml) => {
    const c = await api(`/api/v1/configurations/${enc(name)}`);
    if (withYaml || yamlText === null) yamlText = await api(`/api/v1/configurations/${enc(name)}/rendered`, { text: true });
    redraw(el, state, [c, yamlText], () => drawConfiguration(el, name, c, yamlText));
  };
  await draw(true);
  return { refresh: (changed) => (moved(["plan", "revision"], changed) ? draw(changed.has("revision")) : Promise.resolve()) };
}

function drawConfiguration(el, name, c, yamlText) {
  document.title = `${name} · Configurations · gitamp`;
  const copy = h("button", { type: "button" }, "Copy YAML");
  const copied = h("span", { role: "status", class: "muted" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(yamlText);
      fill(copied, " Copied.");
    } catch (_) {
      fill(copied, " Copying is not allowed here; select the text instead.");
    }
  });
  fill(el,
    h("p", { class: "crumbs" }, h("a", { href: "#/configurations" }, "Configurations"), " / "),
    h("h1", {}, name),
    c.description ? h("p", {}, c.description) : null,
    h("div", { class: "grid" },
      section("Configuration", dl([
        ["Selector", selectorText(c.selector)],
        ["Priority", String(c.priority)],
        ["Rollout policy", policyText(c.rollout_policy)],
        ["Revision", revisionLink(null, c.revision)],
        ["Hash", c.hash ? h("code", {}, c.hash.slice(0, 16)) : "did not render"],
        ["Matched agents", h("a", { href: `#/agents?configuration=${enc(name)}` }, String(c.matched_agents))],
        ["Pipeline", `${c.sources.join(", ") || "–"} → ${c.processors.join(", ") || "–"} → ${c.destinations.join(", ") || "–"}`],
      ])),
      section("Rollout", rolloutProgress(name, c.rollout, c.counts), statusChart(c.counts))),
    section("Rendered collector YAML (masked)",
      h("p", {}, copy, copied),
      h("pre", { class: "code", id: "rendered", tabindex: 0, "aria-label": "Rendered collector YAML" }, yaml(yamlText))));
}

// ---- revisions ---------------------------------------------------------------------------

function acceptedBadge(r) {
  return h("span", { class: `badge ${r.accepted ? "accepted" : "rejected"}` }, r.accepted ? "accepted" : "rejected");
}

async function revisions(el, parts, query) {
  if (parts.length > 0) return revision(el, parts[0]);
  document.title = "Revisions · gitamp";
  let offset = Number(query.get("offset")) || 0;
  const draw = async () => {
    const [status, page] = await Promise.all([api("/api/v1/status"), api(`/api/v1/revisions?limit=${PAGE}&offset=${offset}`)]);
    setQuery("/revisions", new URLSearchParams(offset ? { offset } : {}));
    const last = page.offset + page.items.length;
    fill(el, h("h1", {}, "Revisions"),
      table("Revisions, newest first", ["Revision", "Commit", "Seen", "Verdict", "Errors / warnings", "Applied", "Push → applied p50 / p99"],
        page.items.map((r) => [
          revisionLink(status.source, r.revision), r.commit ? commitText(r.commit) : "–", when(r.at), acceptedBadge(r),
          `${r.errors} / ${r.warnings}`,
          r.convergence ? `${r.convergence.applied}/${r.convergence.targeted} (${r.convergence.state})` : "–",
          r.convergence ? `${ms(r.convergence.latency.p50_ms)} / ${ms(r.convergence.latency.p99_ms)}` : "–"]),
        "No revision seen yet."),
      h("div", { class: "pager" },
        h("button", { type: "button", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); draw(); } }, "Newer"),
        h("span", {}, `${page.total === 0 ? 0 : page.offset + 1}–${last} of ${page.total}`),
        h("button", { type: "button", disabled: last >= page.total, onclick: () => { offset += PAGE; draw(); } }, "Older")));
  };
  await draw();
  return { refresh: (changed) => (moved(["revision", "rejected", "plan"], changed) ? draw() : Promise.resolve()) };
}

async function revision(el, rev) {
  const draw = async () => {
    const [status, r] = await Promise.all([api("/api/v1/status"), api(`/api/v1/revisions/${enc(rev)}`)]);
    document.title = `${short(r.revision)} · Revisions · gitamp`;
    const c = r.convergence;
    fill(el,
      h("p", { class: "crumbs" }, h("a", { href: "#/revisions" }, "Revisions"), " / "),
      h("h1", {}, h("code", {}, short(r.revision)), " ", acceptedBadge(r)),
      section("Revision", dl([
        ["Commit", h("span", {}, h("code", {}, r.revision), " ", commitUrl(status.source, r.revision) ? h("a", { href: commitUrl(status.source, r.revision), rel: "noreferrer", target: "_blank" }, "on the Git host ↗") : "")],
        r.commit ? ["Message", commitText(r.commit)] : null,
        ["Seen", when(r.at)],
        ["Errors / warnings", `${r.errors} / ${r.warnings}`],
        ["Served now", status.current_revision === r.revision ? "yes" : "no"],
      ])),
      c ? section("Reach", dl([
        ["State", `${c.state}${c.reason ? `: ${c.reason}` : ""}`],
        ["Applied", `${c.applied}/${c.targeted}`],
        ["Failed / rolled back / waiting", `${c.failed} / ${c.rolled_back} / ${c.waiting}`],
        ["Push → applied", `p50 ${ms(c.latency.p50_ms)}, p99 ${ms(c.latency.p99_ms)}, max ${ms(c.latency.max_ms)} (${c.latency.samples} samples)`],
      ]), bar([{ cls: "seg-synced", value: c.applied }, { cls: "seg-failed", value: c.failed + c.rolled_back }, { cls: "seg-pending", value: c.waiting }], c.targeted, `${c.applied} of ${c.targeted} applied`)) : null,
      section("Diagnostics", diagnostics(r.diagnostics)));
  };
  await draw();
  return { refresh: (changed) => (moved(["plan", "revision"], changed) ? draw() : Promise.resolve()) };
}

export const views = { overview, agents, configurations, revisions };
