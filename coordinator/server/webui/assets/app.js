// coordinatord's web view: reads the state stream GET /v1/state:watch
// (WatchState: newline-delimited JSON, a snapshot at once, then one each
// time something changes, and keepalives) and redraws on each snapshot; when
// the stream ends (the server ends each after a while) or fails it
// reconnects, with backoff on failures. Everything shown comes from /v1/...;
// the actions are the REST gateway's own POSTs, so whatever guards those
// routes guards the page. When a call answers 401 the page asks for a
// token, which it exchanges once for a session cookie (POST /v1/session)
// and forgets; a viewer sees the actions disabled, with the reason.
"use strict";

const WATCH = "/v1/state:watch";
const RETRY_MIN_MS = 500, RETRY_MAX_MS = 15000; // reconnection backoff after a failure
const SVG = "http://www.w3.org/2000/svg";
const TERMINAL = new Set(["DONE", "ABORTED", "FAILED"]);

let selected = null; // the service whose detail is shown
let last = null;     // the last snapshot drawn
let me = null;       // who the page acts as: {name, role, via} from GET /v1/session
let loggingIn = false; // the token form is shown: the stream waits

// AuthError is a 401: the page needs a (new) session.
class AuthError extends Error {}

const canAct = () => !me || me.role === "operator";

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

// failure turns an answer that is not OK into an Error: an AuthError for
// 401 (the token form is shown), and for 403 a note that says what role
// is missing.
async function failure(method, path, r) {
  const body = await r.text();
  let msg = body;
  try { msg = JSON.parse(body).message || body; } catch (_) { /* not JSON */ }
  if (r.status === 401) {
    showLogin(msg);
    return new AuthError(`${method} ${path}: ${r.status} ${msg}`);
  }
  if (r.status === 403) showRoleNote(msg);
  return new Error(`${method} ${path}: ${r.status} ${msg}`);
}

async function post(path) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  if (!r.ok) throw await failure("POST", path, r);
}

function showRoleNote(msg) {
  const note = document.getElementById("role-note");
  note.textContent = msg;
  note.hidden = false;
}

function showLogin(msg) {
  if (loggingIn) return;
  loggingIn = true;
  me = null;
  document.getElementById("whoami").hidden = true;
  document.getElementById("login-why").textContent = `This coordinator wants an admin token (${msg}).`;
  document.getElementById("login").hidden = false;
  document.getElementById("login-token").focus();
}

// whoami asks who the page acts as, and says so in the header; a viewer
// is told that the actions need an operator.
async function whoami() {
  const r = await fetch("/v1/session", { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!r.ok) return; // the stream's 401 shows the form
  me = await r.json();
  const who = document.getElementById("whoami");
  if (me.via === "open") { who.hidden = true; return; }
  const parts = [`${me.name} (${me.role})`];
  if (me.via === "cookie") {
    const out = el("button", { type: "button", id: "logout" }, "Log out");
    out.addEventListener("click", async () => {
      await fetch("/v1/session", { method: "DELETE" });
      location.reload();
    });
    parts.push(out);
  }
  who.replaceChildren(...parts);
  who.hidden = false;
  const note = document.getElementById("role-note");
  if (me.role !== "operator") {
    note.textContent = `Signed in as ${me.name}, a ${me.role}: aborting updates and ending self-preservation need the operator role.`;
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  if (last) draw(last);
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("login-token");
  const err = document.getElementById("login-error");
  err.textContent = "";
  const r = await fetch("/v1/session", { method: "POST", headers: { Authorization: `Bearer ${input.value.trim()}` } });
  input.value = ""; // the cookie stands for it from now on
  if (!r.ok) {
    let msg = await r.text();
    try { msg = JSON.parse(msg).message || msg; } catch (_) { /* not JSON */ }
    err.textContent = msg;
    return;
  }
  document.getElementById("login").hidden = true;
  loggingIn = false;
  await whoami();
  connect(0);
});

const phaseName = (p) => (p || "").replace(/^PHASE_/, "");
const strategyName = (s) => (s || "").replace(/^STRATEGY_/, "");
// count is "1 thing" or "n things".
const count = (n, one, many) => `${n} ${Number(n) === 1 ? one : many}`;
const when = (ts) => (ts ? new Date(ts).toLocaleTimeString() : "");

// view turns a StateSnapshot into what the drawing functions read.
function view(s) {
  const services = s.services || [];
  return {
    graph: { services: services.map((x) => ({ name: x.name, free: x.free, blocking: x.blocking, transactions: [] })),
      edges: s.edges || [] },
    services: { services },
    updates: { updates: s.updates || [] },
    cluster: s.cluster || {},
    clusterError: s.clusterError || "",
    sp: s.selfPreservation || {},
    freeness: Object.fromEntries((s.blocked || []).map((f) => [f.service, f])),
    at: new Date(),
  };
}

// blockers lists the transactions that block svc: the freeness answer's when
// there is one, otherwise the graph's.
function blockers(snap, svc) {
  const f = snap.freeness[svc.name];
  if (f) return (f.blockers || []).map((b) => ({ id: b.txnId, reason: b.reason }));
  return svc.free ? [] : (svc.transactions || []).map((id) => ({ id, reason: "" }));
}

// layers places callers above callees: a service's layer is one more than
// its deepest caller's (cycles are cut after as many rounds as services).
function layers(names, edges) {
  const layer = Object.fromEntries(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.from in layer && e.to in layer && layer[e.to] < layer[e.from] + 1 && layer[e.from] + 1 < names.length) {
        layer[e.to] = layer[e.from] + 1;
        changed = true;
      }
    }
    if (!changed) break;
  }
  const rows = [];
  for (const n of names) (rows[layer[n]] = rows[layer[n]] || []).push(n);
  return rows.filter(Boolean);
}

function drawGraph(snap) {
  const box = document.getElementById("graph");
  const svcs = snap.graph.services || [];
  if (svcs.length === 0) {
    box.replaceChildren(el("p", {}, "No services registered."));
    return;
  }
  const byName = Object.fromEntries(svcs.map((s) => [s.name, s]));
  const info = Object.fromEntries((snap.services.services || []).map((s) => [s.name, s]));
  const rows = layers(svcs.map((s) => s.name).sort(), snap.graph.edges || []);
  const W = 230, H = 94, GX = 40, GY = 60, PAD = 20;
  const width = PAD * 2 + Math.max(...rows.map((r) => r.length)) * (W + GX) - GX;
  const height = PAD * 2 + rows.length * (H + GY) - GY;
  const pos = {};
  rows.forEach((row, y) => {
    const off = (width - (row.length * (W + GX) - GX)) / 2;
    row.forEach((n, x) => { pos[n] = { x: off + x * (W + GX), y: PAD + y * (H + GY) }; });
  });
  const svg = el("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "dependency graph" });
  svg.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#777" }))));
  for (const e of snap.graph.edges || []) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y;
    const d = y2 > y1 ? `M ${x1} ${y1} C ${x1} ${y1 + GY / 2}, ${x2} ${y2 - GY / 2}, ${x2} ${y2}`
      : `M ${a.x + W} ${a.y + H / 2} C ${a.x + W + 40} ${a.y + H / 2}, ${b.x + W + 40} ${b.y + H / 2}, ${b.x + W} ${b.y + H / 2}`;
    svg.append(el("svg:path", { class: "edge" + (e.learned ? " learned" : ""), d, "marker-end": "url(#arrow)",
      "data-from": e.from, "data-to": e.to }, el("svg:title", {}, `${e.from} calls ${e.to}${e.learned ? " (learned)" : ""}`)));
  }
  for (const name of Object.keys(pos)) {
    const s = byName[name], i = info[name] || {};
    const { x, y } = pos[name];
    const bl = blockers(snap, s);
    const def = i.defaultVersion || "";
    const others = (i.versions || s.versions || []).map((v) => v.version).filter((v) => v !== def);
    const state = s.free ? "free" : `blocked by ${count(s.blocking, "transaction", "transactions")}`;
    const upd = i.update ? `updating to ${i.update.toVersion}: ${phaseName(i.update.phase)}` : "";
    const tip = s.free ? `${name}: free` : `${name} is blocked by:\n` + bl.map((b) => b.id + (b.reason ? ` (${b.reason})` : "")).join("\n");
    const g = el("svg:g", { class: "node " + (s.free ? "free" : "blocked") + (selected === name ? " selected" : ""),
      "data-service": name, "data-free": String(s.free), "data-blocking": bl.map((b) => b.id).join(" "), tabindex: 0 },
    el("svg:title", {}, tip),
    el("svg:rect", { x, y, width: W, height: H }),
    el("svg:text", { class: "name", x: x + 8, y: y + 17 }, name),
    el("svg:text", { x: x + 8, y: y + 34 }, `default ${def || "?"}`),
    el("svg:text", { x: x + 8, y: y + 50 }, others.length ? `other: ${others.join(", ")}` : "no other version"),
    el("svg:text", { x: x + 8, y: y + 66, class: "state" }, state),
    el("svg:text", { x: x + 8, y: y + 82, class: "update" }, upd));
    g.addEventListener("click", () => { selected = selected === name ? null : name; draw(last); });
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { selected = name; draw(last); } });
    svg.append(g);
  }
  box.replaceChildren(svg);
}

function drawDetail(snap) {
  const box = document.getElementById("detail");
  const s = (snap.graph.services || []).find((x) => x.name === selected);
  if (!s) { box.hidden = true; box.replaceChildren(); return; }
  const i = (snap.services.services || []).find((x) => x.name === selected) || {};
  const bl = blockers(snap, s);
  const versions = el("ul", {}, ...(i.versions || []).map((v) =>
    el("li", {}, `${v.version}${v.default ? " (default)" : ""}: ${count(v.instances, "instance", "instances")}, ${v.connected} connected, ${count(v.liveTransactions, "live transaction", "live transactions")}`)));
  const u = i.update || i.lastUpdate;
  const parts = [
    el("strong", {}, s.name), " — ", s.free ? "free" : `blocked by ${count(s.blocking, "transaction", "transactions")}`,
    versions,
    u ? el("p", {}, `${i.update ? "Update in progress" : "Last update"}: `, el("code", {}, u.id),
      ` ${u.fromVersion} → ${u.toVersion} (${strategyName(u.strategy)}) ${phaseName(u.phase)}`) : null,
    s.free ? null : el("div", {}, "Blocking transactions:",
      el("ul", { id: "blockers", "data-service": s.name }, ...bl.map((b) =>
        el("li", { class: "blocker", "data-txn": b.id }, el("code", {}, b.id), b.reason ? ` — ${b.reason}` : "")))),
  ];
  box.replaceChildren(...parts.filter((p) => p !== null));
  box.hidden = false;
}

function drawUpdates(snap) {
  const tbody = document.querySelector("#updates tbody");
  const ups = (snap.updates.updates || []).slice().sort((a, b) => (b.createdAt || "").localeCompare(a.createdAt || ""));
  if (ups.length === 0) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 8 }, "No updates.")));
    return;
  }
  tbody.replaceChildren(...ups.map((u) => {
    const phase = phaseName(u.phase);
    const p = u.progress || {};
    const prog = TERMINAL.has(phase) ? (u.reason || "") :
      [p.waitingFor, p.blocking ? `${p.blocking} blocking` : "", p.heldCalls ? `${p.heldCalls} held calls` : "",
        p.oldTransactions ? `${p.oldTransactions} old transactions` : "",
        p.unacknowledgedSessions ? `${p.unacknowledgedSessions} sessions to acknowledge` : ""].filter(Boolean).join("; ");
    let action = null;
    if (!TERMINAL.has(phase)) {
      action = el("button", { type: "button", "data-abort": u.id, disabled: canAct() ? null : "",
        title: canAct() ? null : "needs the operator role" }, "Abort");
      action.addEventListener("click", async () => {
        if (!confirm(`Abort update ${u.id} of ${u.service}?`)) return;
        try { await post(`/v1/updates/${encodeURIComponent(u.id)}:abort`); } catch (e) { alert(e.message); }
      });
    }
    return el("tr", { "data-update": u.id },
      el("td", {}, el("code", {}, u.id)), el("td", {}, u.service),
      el("td", {}, `${u.fromVersion} → ${u.toVersion}${u.rollingBack ? " (rolling back)" : ""}`),
      el("td", {}, strategyName(u.strategy)),
      el("td", { class: "phase phase-" + phase, "data-phase": phase }, phase),
      el("td", {}, prog), el("td", {}, when(u.createdAt)), el("td", {}, action));
  }));
}

function drawCluster(snap) {
  const c = snap.cluster;
  const replicas = el("ul", {}, ...(c.replicas || []).map((r) =>
    el("li", {}, `${r.name}${r.leader ? " (leader)" : ""} — gRPC ${r.grpcAddress}, HTTP ${r.httpAddress}`)));
  const members = el("table", {}, el("thead", {}, el("tr", {}, ...["etcd member", "healthy", "raft leader", "learner", "db size", "client URLs", "error"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...(c.members || []).map((m) => el("tr", {},
      el("td", {}, m.name || m.id), el("td", {}, m.healthy ? "yes" : "NO"), el("td", {}, m.raftLeader ? "yes" : ""),
      el("td", {}, m.learner ? "yes" : ""), el("td", {}, m.dbSizeBytes ? `${Math.round(Number(m.dbSizeBytes) / 1024)} KiB` : ""),
      el("td", {}, (m.clientUrls || []).join(" ")), el("td", {}, m.error || "")))));
  document.getElementById("cluster").replaceChildren(...[
    el("p", { id: "leader" }, "Leader: ", el("strong", {}, c.leader ? c.leader.name : "none"), ` · answered by ${c.answeredBy || "?"}`),
    el("div", {}, "Replicas:", replicas), members,
    snap.clusterError ? el("p", { class: "cluster-error" }, snap.clusterError) : null].filter(Boolean));

  const sp = snap.sp;
  const parts = [el("span", { id: "sp-state", class: sp.active ? "active" : "" }, sp.active ? `ACTIVE since ${when(sp.since)}` : "inactive"),
    ` · ${sp.recentExpiries} recent expiries, ${sp.activations} activations; enters when more than ${Math.round(sp.ratio * 100)}% of at least ${sp.minCount} sessions expire within ${sp.window}`];
  if (sp.active) {
    parts.push(` · ${(sp.queuedSessions || []).length} queued sessions `);
    const b = el("button", { type: "button", id: "sp-end", disabled: canAct() ? null : "",
      title: canAct() ? null : "needs the operator role" }, "End self-preservation");
    b.addEventListener("click", async () => {
      if (!confirm("End self-preservation and expire the queued sessions?")) return;
      try { await post("/v1/selfpreservation:end"); } catch (e) { alert(e.message); }
    });
    parts.push(b);
  }
  document.getElementById("selfpreservation").replaceChildren(el("p", {}, ...parts));
}

function draw(snap) {
  if (!snap) return;
  drawGraph(snap);
  drawDetail(snap);
  drawUpdates(snap);
  drawCluster(snap);
}

// The stream. status shows "live" while it is open, "reconnecting" while
// it is not; body's data-stream says the same and data-snapshots counts
// the snapshots drawn (tests read both).
let snapshots = 0;
let stream = null;   // the AbortController of the open stream
let retry = null;    // the timer of the next connection
let failures = 0;    // in a row: the backoff grows with them

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status " + state;
  document.body.dataset.stream = state;
}

// connect opens the stream after delay ms, unless it is open or due.
function connect(delay) {
  if (stream || retry !== null) return;
  retry = setTimeout(() => { retry = null; watch(); }, delay);
}

// watch reads the stream until it ends, then schedules the next one.
async function watch() {
  if (loggingIn) { setStatus("error", "not updated: log in"); return; }
  if (document.hidden) return; // reconnects when shown
  const ctl = new AbortController();
  stream = ctl;
  const before = snapshots;
  let err = null;
  try {
    const r = await fetch(WATCH, { headers: { Accept: "application/json" }, cache: "no-store", signal: ctl.signal });
    if (!r.ok) throw await failure("GET", WATCH, r);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) receive(JSON.parse(line));
        }
      }
    } finally {
      reader.cancel().catch(() => {}); // a line that failed: let the response go
    }
  } catch (e) {
    err = e;
  }
  if (stream === ctl) stream = null;
  if (ctl.signal.aborted) return; // closed on purpose (hidden tab)
  if (err instanceof AuthError) { setStatus("error", "not updated: log in"); return; }
  const drawn = snapshots - before;
  if (err === null && drawn > 0) { // the server ended it (its time was up): at once
    failures = 0;
    setStatus("reconnecting", "reconnecting…");
    connect(0);
    return;
  }
  if (err === null) err = new Error("the stream ended before its first snapshot");
  failures++;
  const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (failures - 1));
  setStatus("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s: ${err.message}`);
  connect(delay);
}

// receive handles one line of the stream: {"result": {"snapshot": ...}},
// {"result": {"keepalive": ...}} or {"error": ...}.
function receive(msg) {
  if (msg.error) throw new Error(`${WATCH}: ${msg.error.message || JSON.stringify(msg.error)}`);
  const ev = msg.result || {};
  if (ev.snapshot) {
    last = view(ev.snapshot);
    draw(last);
    snapshots++;
    document.body.dataset.snapshots = String(snapshots);
    failures = 0;
  } else if (!ev.keepalive) {
    return;
  }
  setStatus("live", `live · last change ${last ? last.at.toLocaleTimeString() : "?"}`);
}

document.addEventListener("visibilitychange", () => {
  // A hidden tab closes its stream (a replica serves a bounded number);
  // shown again, it reconnects and gets a fresh snapshot at once.
  if (document.hidden) {
    if (stream) stream.abort();
    stream = null;
    clearTimeout(retry);
    retry = null;
    setStatus("reconnecting", "paused while the tab is hidden");
  } else {
    connect(0);
  }
});
setStatus("reconnecting", "connecting…");
whoami().finally(() => connect(0));
