// routeguard dashboard: polls GET /ui/api/summary and draws it. No framework, no build step.
// The key lives in this tab's sessionStorage and leaves only as an Authorization header to this
// origin. Every value from the server is written with textContent or as an SVG attribute,
// never as HTML.
"use strict";

const KEY = "routeguard.dashboard.key";
const WINDOW = "routeguard.dashboard.window";
const POLL_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
let timer = null;
let inFlight = false;

// ---------------------------------------------------------------- DOM helpers

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function fill(id, ...nodes) { $(id).replaceChildren(...nodes); }

function empty(text) { return el("div", { class: "empty", text }); }

// ---------------------------------------------------------------- formatting

function usd(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  const digits = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
  return "$" + v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function int(v) { return v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US"); }
function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + "%"; }
function ms(v) {
  if (v === null || v === undefined) return "–";
  return v < 10 ? v.toFixed(2) + " ms" : v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s";
}
function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
function when(ts) {
  if (ts === null || ts === undefined) return "–";
  const d = new Date(ts * 1000);
  const left = ts - Date.now() / 1000;
  const rel = left <= 0 ? "now" : left < 3600 ? `in ${Math.ceil(left / 60)} min`
    : left < 172800 ? `in ${Math.round(left / 3600)} h` : `in ${Math.round(left / 86400)} d`;
  return `${d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })} (${rel})`;
}
function ago(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  return s < 60 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`;
}
function label(v, none) { return v === null || v === undefined || v === "" ? none : String(v); }

// ---------------------------------------------------------------- charts

function meter(used, { width = 120, warn = 0.8, target = null } = {}) {
  const h = 8;
  const share = Math.max(0, Math.min(1, used || 0));
  // warn > 1: a plain proportion bar (no warning colours); else budget-style thresholds.
  const cls = used === null || warn > 1 ? "fill-ok" : used >= 1 ? "fill-bad" : used >= warn ? "fill-warn" : "fill-ok";
  const node = svg("svg", { width, height: h + 4, viewBox: `0 0 ${width} ${h + 4}`, role: "img" },
    svg("rect", { class: "track", x: 0, y: 2, width, height: h, rx: 4 }),
    svg("rect", { class: cls, x: 0, y: 2, width: Math.max(share > 0 ? 2 : 0, share * width), height: h, rx: 4 }));
  if (target !== null && target !== undefined) {
    const x = Math.max(1, Math.min(width - 1, target * width));
    node.append(svg("line", { class: "target", x1: x, x2: x, y1: 0, y2: h + 4 }));
  }
  return node;
}

function stacked(parts, width = 160) {
  const h = 10;
  const node = svg("svg", { width, height: h, viewBox: `0 0 ${width} ${h}`, role: "img" });
  let x = 0;
  parts.forEach((p, i) => {
    const w = p.share * width;
    node.append(svg("rect", { class: `seg${Math.min(i, 5)}`, x, y: 0, width: Math.max(0, w - 1), height: h },
      svg("title", { text: `${p.model}: ${pct(p.share)}` })));
    x += w;
  });
  return node;
}

function timeline(points, bucketS) {
  const W = 1200, H = 220, L = 44, R = 76, T = 12, B = 26;
  const iw = W - L - R, ih = H - T - B;
  const maxReq = Math.max(1, ...points.map((p) => p.requests));
  const maxSpend = Math.max(0, ...points.map((p) => p.cost_usd));
  const bw = iw / points.length;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "requests and errors over time" });
  for (let i = 0; i <= 4; i++) {
    const y = T + ih - (ih * i) / 4;
    root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: y, y2: y }));
    root.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", text: int((maxReq * i) / 4) }));
    if (maxSpend > 0) root.append(svg("text", { x: W - R + 6, y: y + 4, text: usd((maxSpend * i) / 4) }));
  }
  const spendPath = [];
  points.forEach((p, i) => {
    const x = L + i * bw;
    const hr = (p.requests / maxReq) * ih;
    const he = (p.errors / maxReq) * ih;
    const tip = `${clock(p.ts)}–${clock(p.ts + bucketS)}: ${p.requests} requests, ${p.errors} errors, ${usd(p.cost_usd)}`;
    if (p.requests) root.append(svg("rect", { class: "bar-req", x: x + 1, y: T + ih - hr, width: Math.max(1, bw - 2), height: hr }, svg("title", { text: tip })));
    if (p.errors) root.append(svg("rect", { class: "bar-err", x: x + 1, y: T + ih - he, width: Math.max(1, bw - 2), height: he }, svg("title", { text: tip })));
    if (maxSpend > 0) spendPath.push(`${i ? "L" : "M"}${(x + bw / 2).toFixed(1)},${(T + ih - (p.cost_usd / maxSpend) * ih).toFixed(1)}`);
  });
  if (spendPath.length) root.append(svg("path", { class: "line-spend", d: spendPath.join(" ") }));
  const step = Math.max(1, Math.round(points.length / 6));
  for (let i = 0; i < points.length; i += step) {
    root.append(svg("text", { x: L + i * bw, y: H - 8, text: clock(points[i].ts) }));
  }
  return root;
}

// ---------------------------------------------------------------- tables

function table(headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { class: h.num ? "num" : null, text: h.title })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function row(...cells) { return el("tr", {}, ...cells); }
function td(text, cls) { return el("td", { class: cls || null, text, title: cls === "name" ? text : null }); }
function num(text) { return el("td", { class: "num", text }); }
function cell(node, cls) { return el("td", { class: cls || null }, node); }

function spendTable(rows, what, none) {
  if (!rows.length) return empty("No requests in this window.");
  const max = Math.max(...rows.map((r) => r.cost_usd)) || 1;
  return table(
    [{ title: what }, { title: "Requests", num: true }, { title: "Errors", num: true }, { title: "Tokens", num: true }, { title: "Spend", num: true }, { title: "" }],
    rows.map((r) => {
      const name = what === "Key" && r.name ? `${r.name} (${r.group})` : label(r.group, none);
      return row(td(name, "name"), num(int(r.requests)), num(int(r.errors)),
        num(int(r.prompt_tokens + r.completion_tokens)), num(usd(r.cost_usd)), cell(meter(r.cost_usd / max, { width: 60, warn: 2 })));
    }));
}

// ---------------------------------------------------------------- sections

function kpis(d) {
  const t = d.totals;
  const win = document.querySelector(`#window option[value="${d.window.seconds}"]`);
  const span = win ? `last ${win.textContent}` : "this window";
  const req = $("requests-total");
  req.textContent = int(t.requests);
  req.dataset.value = String(t.requests);
  $("requests-sub").textContent = `${span} · ${int(t.prompt_tokens + t.completion_tokens)} tokens`;
  const err = $("errors-total");
  err.textContent = int(t.errors);
  err.classList.toggle("alert", t.errors > 0);
  $("errors-sub").textContent = `${pct(t.error_rate)} of requests`;
  const spend = $("spend-total");
  spend.textContent = usd(t.spend_usd);
  spend.dataset.value = String(t.spend_usd);
  $("spend-sub").textContent = span;
  $("saved-total").textContent = usd(t.saved_usd);
  $("saved-sub").textContent = t.cache_hit_rate === null ? "cache not used" : `hit rate ${pct(t.cache_hit_rate)}`;
  const open = d.circuits.filter((c) => c.open).length;
  const circ = $("circuits-total");
  circ.textContent = `${open} / ${d.circuits.length}`;
  circ.classList.toggle("alert", open > 0);
  $("circuits-sub").textContent = `${int(d.fallbacks.total)} fallbacks since start`;
  $("approvals-total").textContent = int(d.approvals.length);
  $("approvals-sub").textContent = `${int(d.enforcement.denied)} tool calls denied`;
}

function budgets(rows) {
  if (!rows.length) return empty("No budget accounts configured.");
  if (rows[0].error) return empty(rows[0].error);
  return table(
    [{ title: "Account" }, { title: "Period" }, { title: "Spent", num: true }, { title: "Held", num: true }, { title: "Limit", num: true }, { title: "Used", num: true }, { title: "" }, { title: "Resets" }],
    rows.map((b) => row(
      td(b.parent ? `${b.name} ← ${b.parent}` : b.name, "name"), td(b.period),
      num(usd(b.spent_usd)), num(usd(b.reserved_usd)), num(b.limit_usd === null ? "no limit" : usd(b.limit_usd)),
      num(pct(b.used)), cell(meter(b.used, { width: 140, warn: b.soft_limit_usd && b.limit_usd ? b.soft_limit_usd / b.limit_usd : 0.8 })),
      td(b.resets_at === null ? (b.period === "total" ? "never" : "rolling") : when(b.resets_at)))));
}

function cache(rows) {
  if (!rows.length) return empty("No cacheable requests in this window.");
  return table(
    [{ title: "Route" }, { title: "Lookups", num: true }, { title: "Hits", num: true }, { title: "Hit rate", num: true }, { title: "" }, { title: "Saved", num: true }],
    rows.map((r) => row(td(label(r.route, "(none)"), "name"), num(int(r.lookups)), num(int(r.hits)),
      num(pct(r.hit_rate)), cell(meter(r.hit_rate, { width: 80, warn: 2 })), num(usd(r.saved_usd)))));
}

function routes(rows) {
  if (!rows.length) return empty("No requests in this window.");
  return table(
    [{ title: "Route" }, { title: "Requests", num: true }, { title: "Served by" }, { title: "Strong share" }],
    rows.map((r) => {
      const legend = el("div", { class: "legend" });
      r.models.slice(0, 6).forEach((m, i) => legend.append(el("i", { class: `sw seg${Math.min(i, 5)}` }), `${m.model} ${pct(m.share)}`));
      let strong = el("span", { class: "muted", text: "–" });
      if (r.strong_share !== null) {
        const target = r.strong_target;
        strong = el("span", {}, meter(r.strong_share, { width: 80, warn: 2, target }),
          ` ${pct(r.strong_share)}` + (target !== null ? ` (target ${pct(target)})` : ""));
      }
      return row(td(label(r.route, "(none)"), "name"), num(int(r.requests)),
        cell(el("div", {}, stacked(r.models), legend)), cell(strong));
    }));
}

function latency(rows) {
  if (!rows.length) return empty("No latency recorded yet.");
  const max = Math.max(1, ...rows.map((r) => r.p95_ms || 0));
  return table(
    [{ title: "Layer" }, { title: "Count", num: true }, { title: "p50", num: true }, { title: "p95", num: true }, { title: "" }],
    rows.map((r) => row(
      el("td", { class: "name", title: r.source === "metrics" ? "since start (metrics)" : "this window (spend log)" }, r.layer,
        el("span", { class: "muted small", text: r.source === "metrics" ? " · since start" : "" })),
      num(int(r.count)), num(ms(r.p50_ms)), num(ms(r.p95_ms)),
      cell(meter((r.p95_ms || 0) / max, { width: 90, warn: 2, target: r.p50_ms !== null ? r.p50_ms / max : null })))));
}

function reliability(d) {
  const out = [];
  out.push(el("div", { class: "sub-h", text: `Circuits (${d.circuits.filter((c) => c.open).length} open)` }));
  out.push(d.circuits.length ? table([{ title: "Deployment" }, { title: "State" }],
    d.circuits.map((c) => row(td(c.deployment, "name"), cell(c.open
      ? el("span", { class: "pill bad", text: c.until ? `open until ${clock(c.until)}` : "open (probing)" })
      : el("span", { class: "pill ok", text: "closed" })))))
    : empty("No deployments."));
  out.push(el("div", { class: "sub-h", text: `Fallbacks (${int(d.fallbacks.total)})` }));
  out.push(d.fallbacks.by_route.length ? table([{ title: "Route" }, { title: "Requests that fell back", num: true }],
    d.fallbacks.by_route.map((f) => row(td(label(f.route, "(none)"), "name"), num(int(f.count)))))
    : empty("No request needed a fallback."));
  return out;
}

function enforcement(e) {
  if (!e.decisions.length) return empty("No tool calls checked yet.");
  return table(
    [{ title: "Rule" }, { title: "Effect" }, { title: "Outcome" }, { title: "Calls", num: true }],
    e.decisions.map((r) => row(td(r.rule, "name"), td(r.effect),
      cell(el("span", { class: `pill ${r.outcome === "denied" ? "bad" : "ok"}`, text: r.outcome })), num(int(r.count)))));
}

function approvals(list) {
  if (!list.length) return empty("Nothing waiting for approval.");
  return table(
    [{ title: "Tool" }, { title: "Agent" }, { title: "Arguments" }, { title: "Rule" }, { title: "Waiting", num: true }, { title: "" }],
    list.map((a) => {
      const args = JSON.stringify(a.args);
      const approve = el("button", { type: "button", class: "approve", "data-testid": `approve-${a.id}`, "data-approval": a.id, text: "Approve", onclick: () => decide(a.id, "approve") });
      const deny = el("button", { type: "button", class: "deny", "data-testid": `deny-${a.id}`, "data-approval": a.id, text: "Deny", onclick: () => decide(a.id, "deny") });
      return row(td(a.tool, "name"), td(a.agent, "name"), el("td", { class: "args", title: args, text: args }),
        td(a.reason ? `${a.rule_id}: ${a.reason}` : a.rule_id, "name"), num(ago(a.created_at)), el("td", { class: "actions" }, approve, deny));
    }));
}

function render(d) {
  kpis(d);
  fill("timeline", timeline(d.timeline, d.window.bucket_seconds));
  fill("spend-key", spendTable(d.spend.key, "Key", "(master key or none)"));
  fill("spend-model", spendTable(d.spend.model, "Model", "(refused before routing)"));
  fill("spend-team", spendTable(d.spend.team, "Team", "(no team)"));
  fill("spend-org", spendTable(d.spend.org, "Org", "(no org)"));
  fill("budgets", budgets(d.budgets));
  fill("cache", cache(d.cache));
  fill("routes", routes(d.routes));
  fill("latency", latency(d.latency));
  fill("reliability", ...reliability(d));
  fill("approvals", approvals(d.approvals));
  fill("enforcement", enforcement(d.enforcement));
  const s = d.scope;
  $("scope").textContent = `Window figures: the spend log (${s.spend_log === "shared" ? "one database shared by every worker" : "this process"}). `
    + `Since-start figures: Prometheus metrics (${s.metrics === "all workers" ? "summed over every worker" : s.metrics === "off" ? "off: observability.metrics is false" : "this process"}). `
    + (s.approvals === "shared" ? "Pending approvals: every worker's."
      : `Pending approvals: those held by the worker that answered (pid ${s.worker_pid}).`);
}

// ---------------------------------------------------------------- data

function headers() { return { authorization: `Bearer ${sessionStorage.getItem(KEY)}` }; }

async function api(path, init) {
  const r = await fetch(path, { cache: "no-store", credentials: "omit", ...init, headers: { ...headers(), ...(init && init.headers) } });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = body && body.error && body.error.message ? body.error.message : `HTTP ${r.status}`;
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return body;
}

async function refresh() {
  if (inFlight || !sessionStorage.getItem(KEY)) return;
  inFlight = true;
  const status = $("status");
  try {
    const d = await api(`/ui/api/summary?window=${encodeURIComponent($("window").value)}`);
    render(d);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("bad");
    status.dataset.generated = String(d.generated_at);
  } catch (e) {
    if (e.status === 401 || e.status === 403) return signOut(e.message);
    status.textContent = `refresh failed: ${e.message}`;
    status.classList.add("bad");
  } finally {
    inFlight = false;
  }
}

async function decide(id, verb) {
  document.querySelectorAll(`button[data-approval="${CSS.escape(id)}"]`).forEach((b) => { b.disabled = true; });
  try {
    await api(`/ui/api/approvals/${encodeURIComponent(id)}/${verb}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  } catch (e) {
    $("status").textContent = `${verb} failed: ${e.message}`;
    $("status").classList.add("bad");
  }
  await refresh();
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(refresh, POLL_MS);
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("controls").hidden = !signedIn;
}

function signOut(reason) {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  show(false);
  $("login-error").textContent = reason || "";
  $("key").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem(WINDOW);
  if (saved && document.querySelector(`#window option[value="${CSS.escape(saved)}"]`)) $("window").value = saved;
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    $("login-error").textContent = "";
    show(true);
    refresh();
    schedule();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("window").addEventListener("change", () => { sessionStorage.setItem(WINDOW, $("window").value); refresh(); });
  if (sessionStorage.getItem(KEY)) { show(true); refresh(); schedule(); } else { show(false); }
});
