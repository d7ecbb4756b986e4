// gitamp's fleet page: the shell. Reads the public API only (GET), keeps the API token in the
// browser session (sessionStorage, never a URL), routes on the location's hash, and listens to
// GET /api/v1/stream so that the view on screen re-fetches what it shows when the server says
// something changed. No framework, no build step: the server embeds these files as they are.

import { views, notFound } from "/ui/views.js";

const TOKEN_KEY = "gitamp.token";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("live");
const signout = document.getElementById("signout");

/** An API error with the server's own message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** GET an API path; JSON unless `text`. A 401 shows the login and throws. */
export async function api(path, { text = false } = {}) {
  // Whether this request carried a token, read before it went: another request's 401 may
  // have removed the token meanwhile, and this one was refused all the same.
  const sent = token();
  const resp = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (resp.status === 401) {
    showLogin(sent ? "The token was refused (wrong or expired). Enter it again." : null);
    throw new ApiError(401, "unauthorized");
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return text ? resp.text() : resp.json();
}

/** Build an element: h("a", {href: "#/"}, "text", child...). Text is always text, never HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = tag === "svg" || attrs.svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "svg" || v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- login -------------------------------------------------------------------------------

let loginShown = false;

function showLogin(message) {
  // The requests of one page load are refused together: the first 401 shows the login, and
  // the others leave it (and its message) as it is.
  if (loginShown) return;
  sessionStorage.removeItem(TOKEN_KEY);
  loginShown = true;
  stopStream();
  nav.hidden = true;
  signout.hidden = true;
  fill(live);
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", {}, "This server needs its API token (the contents of the file given to --api-token-file). It is kept in this browser tab's session only."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    loginShown = false;
    start();
  });
  document.title = "Sign in · gitamp";
  fill(main, form);
  input.focus();
}

signout.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(null);
});

// ---- live updates ------------------------------------------------------------------------

let streamAbort = null;
let lastChange = null;
let current = null; // the view on screen: { refresh(changed, change) }
let retryTimer = null;

function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
  clearTimeout(retryTimer);
}

function setLive(state) {
  live.className = `live ${state}`;
  fill(live, state === "on" ? "Live" : state === "off" ? "Reconnecting…" : "");
}

/** Which parts of the state moved between two `change` events. */
function changedKeys(before, after) {
  if (!before) return new Set(["all"]);
  const keys = new Set();
  for (const k of Object.keys(after)) {
    if (JSON.stringify(before[k]) !== JSON.stringify(after[k])) keys.add(k);
  }
  return keys;
}

/** One stream per page: fetch() with the token (EventSource cannot send a header). */
async function startStream() {
  stopStream();
  const abort = new AbortController();
  streamAbort = abort;
  try {
    const resp = await fetch("/api/v1/stream", { headers: authHeaders(), signal: abort.signal, cache: "no-store" });
    if (resp.status === 401) {
      showLogin("The token was refused (wrong or expired). Enter it again.");
      return;
    }
    if (!resp.ok || !resp.body) throw new Error(`stream: ${resp.status}`);
    setLive("on");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // Events end with a blank line; a single event is far below this bound.
      if (buffer.length > 1 << 20) throw new Error("stream: event too large");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        onFrame(frame);
      }
    }
  } catch (e) {
    if (abort.signal.aborted) return;
  }
  if (abort.signal.aborted || loginShown) return;
  setLive("off");
  retryTimer = setTimeout(startStream, 2000);
}

function onFrame(frame) {
  let event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event !== "change" || data.length === 0) return;
  let change;
  try {
    change = JSON.parse(data.join("\n"));
  } catch (_) {
    return;
  }
  const changed = changedKeys(lastChange, change);
  lastChange = change;
  if (current && current.refresh && changed.size > 0) {
    current.refresh(changed, change).catch(showError);
  }
}

// ---- routing -----------------------------------------------------------------------------

/** The route in the hash: `#/agents/ID?status=failed` → {parts: ["agents", "ID"], query}. */
export function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search) };
}

/** Put a view's state in the address without re-rendering (keeps the keyboard focus). */
export function setQuery(path, query) {
  const search = query.toString();
  history.replaceState(null, "", `#${path}${search ? `?${search}` : ""}`);
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  const box = h("div", { class: "error", role: "alert" }, e.message || String(e));
  main.prepend(box);
}

async function render() {
  if (loginShown) return;
  if (location.pathname !== "/") {
    // The server answered this address with a 404 and the page: say so.
    current = null;
    nav.hidden = false;
    fill(main, notFound(`Nothing is served at ${location.pathname}.`));
    document.title = "Not found · gitamp";
    return;
  }
  const { parts, query } = route();
  const section = parts[0] || "overview";
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = views[section];
  const container = h("div", { class: "view" });
  fill(main, container);
  if (!view) {
    current = null;
    fill(container, notFound(`There is no page “${parts.join("/")}”.`));
    document.title = "Not found · gitamp";
    return;
  }
  try {
    current = await view(container, parts.slice(1), query);
  } catch (e) {
    current = null;
    if (e instanceof ApiError && e.status === 401) return;
    if (e instanceof ApiError && e.status === 404) {
      fill(container, notFound(e.message));
      return;
    }
    fill(container, h("div", { class: "error", role: "alert" }, e.message || String(e)));
  }
}

/** Check the token (the status route needs it when one is set), then show the route. */
async function start() {
  try {
    await api("/api/v1/status");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    fill(main, h("div", { class: "error", role: "alert" }, `The server did not answer: ${e.message}`));
    return;
  }
  nav.hidden = false;
  signout.hidden = !token();
  lastChange = null;
  await render();
  startStream();
}

window.addEventListener("hashchange", () => {
  render().then(() => main.focus({ preventScroll: true }));
});

start();
