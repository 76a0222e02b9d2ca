// The dashboard page. Plain JavaScript, no framework; the chart is uPlot,
// vendored at build time. The access token lives only in memory; the refresh
// token is the HttpOnly lvd_refresh cookie, so a reload signs back in through
// POST /auth/refresh and nothing is ever put in localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: null, email: null, app: null, stream: null, lastEventId: null, chart: null, tail: [], stats: null, view: "live" };

// ---------- API ----------

async function api(method, path, body, retry = true) {
  const headers = {};
  if (state.token) headers["Authorization"] = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  if (resp.status === 401 && retry && state.token && !path.startsWith("/auth/")) {
    if (await refresh()) return api(method, path, body, false);
    signedOut("Your session ended; sign in again.");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  return { status: resp.status, ok: resp.ok, data };
}

async function refresh() {
  const r = await api("POST", "/auth/refresh", undefined, false);
  if (!r.ok) return false;
  state.token = r.data.access_token;
  return true;
}

function problemText(r) {
  if (!r.data) return `The server answered ${r.status}.`;
  const fields = (r.data.errors || []).map((e) => `${e.pointer || "body"}: ${e.message}`).join("; ");
  return fields ? `${r.data.detail} ${fields}` : r.data.detail || r.data.title;
}

function say(text) { $("status").textContent = text; }

function show(section) {
  for (const id of ["loading", "auth", "apps", "app"]) $(id).hidden = id !== section;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function formError(form, text) { form.querySelector(".error").textContent = text || ""; }

// ---------- accounts ----------

async function start() {
  if (await refresh()) return signedIn();
  show("auth");
}

async function signedIn() {
  const me = await api("GET", "/auth/me");
  if (!me.ok) return signedOut();
  state.email = me.data.email;
  $("who-email").textContent = state.email;
  $("who").hidden = false;
  await listApps();
}

function signedOut(message) {
  stopStream();
  state.token = null;
  $("who").hidden = true;
  show("auth");
  say(message || "");
}

$("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  formError(f);
  const r = await api("POST", "/auth/login", { email: f.email.value, password: f.password.value });
  if (!r.ok) {
    if (r.data && r.data.code === "email_not_verified") return askForCode(f.email.value);
    return formError(f, problemText(r));
  }
  state.token = r.data.access_token;
  f.reset();
  await signedIn();
});

$("sign-up-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  formError(f);
  const r = await api("POST", "/auth/register", { email: f.email.value, password: f.password.value });
  if (!r.ok) return formError(f, problemText(r));
  askForCode(f.email.value);
});

function askForCode(email) {
  $("verify-email").textContent = email;
  $("verify-form").dataset.email = email;
  $("verify-form").hidden = false;
  $("verify-form").code.focus();
  say("Check your inbox for the code.");
}

$("verify-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  formError(f);
  const r = await api("POST", "/auth/verify", { email: f.dataset.email, code: f.code.value.trim() });
  if (!r.ok) return formError(f, problemText(r));
  state.token = r.data.access_token;
  f.hidden = true;
  f.reset();
  say("Your account is verified.");
  await signedIn();
});

$("resend").addEventListener("click", async () => {
  await api("POST", "/auth/otp/resend", { email: $("verify-form").dataset.email });
  say("If the code can be sent, a new one is on its way.");
});

$("sign-out").addEventListener("click", async () => {
  await api("POST", "/auth/logout", undefined, false);
  signedOut("Signed out.");
});

// ---------- apps ----------

async function listApps() {
  stopStream();
  state.app = null;
  show("apps");
  const r = await api("GET", "/api/apps");
  if (!r.ok) return say(problemText(r));
  const list = $("app-list");
  list.replaceChildren(...r.data.items.map((a) => el("li", {}, el("button", { type: "button", onclick: () => openApp(a) }, a.name), el("span", { class: "muted" }, ` · keeps events ${a.retention_days} days`))));
  $("apps-empty").hidden = r.data.items.length > 0;
}

function curlFor(key) {
  return `curl -X POST ${location.origin}/api/logs \\\n  -H 'Content-Type: application/json' \\\n  -H 'X-Api-Key: ${key}' \\\n  -d '{"event": "signup", "properties": {"plan": "pro"}}'`;
}

function showKey(key) {
  $("key-value").textContent = key;
  $("curl-example").textContent = curlFor(key);
  $("key-box").hidden = false;
  $("copy-key").focus();
}

async function copy(text, what) {
  try { await navigator.clipboard.writeText(text); say(`${what} copied.`); } catch { say(`Select the ${what.toLowerCase()} and copy it.`); }
}
$("copy-key").addEventListener("click", () => copy($("key-value").textContent, "Key"));
$("copy-curl").addEventListener("click", () => copy($("curl-example").textContent, "Command"));

$("new-app-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  formError(f);
  const r = await api("POST", "/api/apps", { name: f.name.value });
  if (!r.ok) return formError(f, problemText(r));
  f.reset();
  await listApps();
  showKey(r.data.ingest_key);
});

$("back").addEventListener("click", () => listApps());

$("rotate").addEventListener("click", async () => {
  if (!confirm("Rotate the key? The current key stops working at once.")) return;
  const r = await api("POST", `/api/apps/${state.app.id}/keys/rotate`);
  if (!r.ok) return say(problemText(r));
  await listApps();
  showKey(r.data.ingest_key);
});

$("delete-app").addEventListener("click", async () => {
  if (!confirm(`Delete ${state.app.name} with its rules and events?`)) return;
  const r = await api("DELETE", `/api/apps/${state.app.id}`);
  if (!r.ok) return say(problemText(r));
  say("App deleted.");
  $("key-box").hidden = true;
  await listApps();
});

function openApp(app) {
  state.app = app;
  state.tail = [];
  state.lastEventId = null;
  $("key-box").hidden = true;
  $("app-name").textContent = app.name;
  $("live-curl").textContent = curlFor("<your ingest key>");
  show("app");
  setView("live");
}

function setView(view) {
  state.view = view;
  for (const v of ["live", "rules", "jobs", "alerts"]) {
    $(v).hidden = view !== v;
    $(`tab-${v}`).setAttribute("aria-pressed", view === v);
  }
  stopJobPolling();
  stopAlertPolling();
  if (view === "live") return startLive();
  stopStream();
  if (view === "rules") loadRules();
  else if (view === "jobs") loadJobs();
  else openAlerts();
}
$("tab-live").addEventListener("click", () => setView("live"));
$("tab-rules").addEventListener("click", () => setView("rules"));
$("tab-jobs").addEventListener("click", () => setView("jobs"));
$("tab-alerts").addEventListener("click", () => setView("alerts"));

// ---------- live view ----------

async function startLive() {
  stopStream();
  $("detail").hidden = true;
  const history = await api("GET", `/api/logs?app=${state.app.id}&status=invalid&limit=20`);
  if (history.ok) state.tail = history.data.items;
  renderTail();
  connect();
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function connect() {
  const controller = new AbortController();
  state.stream = controller;
  const app = state.app;
  const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
  if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
  $("live-state").textContent = "Connecting…";
  try {
    const resp = await fetch(`/api/apps/${app.id}/live?window=${$("window").value}`, { headers, signal: controller.signal });
    if (resp.status === 401 && (await refresh())) return connect();
    if (!resp.ok) throw new Error(`the server answered ${resp.status}`);
    $("live-state").textContent = "● Live";
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        handleFrame(buf.slice(0, end));
        buf = buf.slice(end + 2);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    $("live-state").textContent = `Reconnecting (${err.message})…`;
    await new Promise((r) => setTimeout(r, 1000));
  }
  // The server ends each stream after a while; resume where it stopped.
  if (state.stream === controller && state.app === app) connect();
}

function handleFrame(frame) {
  const fields = {};
  for (const line of frame.split("\n")) {
    const i = line.indexOf(": ");
    if (i > 0) fields[line.slice(0, i)] = line.slice(i + 2);
  }
  if (fields.id) state.lastEventId = fields.id;
  if (!fields.data) return;
  const data = JSON.parse(fields.data);
  if (fields.event === "stats") renderStats(data);
  if (fields.event === "invalid") {
    state.tail.unshift(data);
    state.tail.length = Math.min(state.tail.length, 100);
    renderTail();
  }
}

const fmtTime = (t) => (t ? new Date(t).toLocaleString() : "—");

function renderStats(s) {
  state.stats = s;
  const filter = $("event-filter").value;
  const total = s.totals.valid + s.totals.invalid + s.totals.unplanned;
  $("live-empty").hidden = total > 0;
  $("totals").replaceChildren(
    ...["valid", "invalid", "unplanned"].map((k) => el("div", { class: `total ${k}` }, el("span", { class: "n" }, s.totals[k]), el("span", {}, k))),
  );
  // The "other" row (event null) folds the events past a bucket's cap.
  const events = s.by_event.map((e) => e.event).filter((e) => e !== null);
  const select = $("event-filter");
  const known = [...select.options].map((o) => o.value);
  for (const e of events) if (!known.includes(e)) select.append(el("option", { value: e }, e));
  const rows = s.by_event.filter((e) => !filter || e.event === filter);
  $("by-event").tBodies[0].replaceChildren(
    ...rows.map((e) => el("tr", {}, el("th", { scope: "row" }, e.event ?? "(other events)"), el("td", {}, e.valid), el("td", {}, e.invalid), el("td", {}, e.unplanned), el("td", {}, fmtTime(e.last_seen)))),
  );
  const errors = s.top_errors.filter((e) => !filter || e.event === filter);
  $("top-errors").tBodies[0].replaceChildren(
    ...errors.map((e) => el("tr", {}, el("td", {}, e.event ?? "(other errors)"), el("td", {}, el("code", {}, e.event === null ? "" : e.pointer || "(the properties)")), el("td", {}, e.keyword ?? ""), el("td", {}, e.count))),
  );
  renderChart(s);
}

// The chart's width is its container's, now and whenever that changes (a
// phone turned, a window resized), so the newest buckets on the right are
// never cut off.
const chartWidth = () => Math.max(200, Math.floor($("chart").getBoundingClientRect().width) || 600);
new ResizeObserver(() => {
  if (state.chart && !$("chart").closest("[hidden]")) state.chart.plot.setSize({ width: chartWidth(), height: 220 });
}).observe($("chart"));

function renderChart(s) {
  const x = s.series.map((b) => Date.parse(b.start) / 1000);
  const data = [x, s.series.map((b) => b.valid), s.series.map((b) => b.invalid), s.series.map((b) => b.unplanned)];
  if (!state.chart || state.chart.window !== s.window) {
    if (state.chart) state.chart.plot.destroy();
    const opts = {
      width: chartWidth(), height: 220,
      series: [{}, { label: "valid", stroke: "#1a7f37", fill: "rgba(26,127,55,.15)" }, { label: "invalid", stroke: "#cf222e", fill: "rgba(207,34,46,.15)" }, { label: "unplanned", stroke: "#9a6700" }],
      axes: [{}, { size: 40 }],
    };
    state.chart = { plot: new uPlot(opts, data, $("chart")), window: s.window };
  } else {
    state.chart.plot.setData(data);
  }
}

function renderTail() {
  const filter = $("event-filter").value;
  const items = state.tail.filter((e) => !filter || e.event === filter);
  $("tail-empty").hidden = items.length > 0;
  $("tail").replaceChildren(
    ...items.map((e) => el("li", {}, el("button", { type: "button", class: "tail-item", onclick: () => showDetail(e) },
      el("strong", {}, e.event), " ", el("span", { class: "muted" }, fmtTime(e.received_at)), " — ",
      e.errors.map((x) => `${x.pointer || "/"} ${x.keyword}`).join(", ")))),
  );
}

function showDetail(e) {
  $("detail-title").textContent = `${e.event} · ${fmtTime(e.received_at)} · rule v${e.rule_version}`;
  $("detail-errors").replaceChildren(...e.errors.map((x) => el("li", {}, el("code", {}, x.pointer || "/"), ` ${x.keyword}: ${x.message}`)));
  const bad = new Set(e.errors.map((x) => x.pointer));
  $("detail-json").replaceChildren(renderJson(e.properties, "", bad, 0));
  $("detail").hidden = false;
  $("detail").focus();
}

// Pretty-prints JSON, marking the values the errors point at (and, for a
// missing property, where it should have been).
function renderJson(value, pointer, bad, depth) {
  const pad = "  ".repeat(depth);
  const frag = document.createDocumentFragment();
  const mark = (node, p) => (bad.has(p) ? el("mark", { title: "fails the rule" }, node) : node);
  if (value && typeof value === "object") {
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    frag.append(isArray ? "[\n" : "{\n");
    entries.forEach(([k, v], i) => {
      const p = `${pointer}/${k.replaceAll("~", "~0").replaceAll("/", "~1")}`;
      const line = document.createDocumentFragment();
      line.append(pad + "  " + (isArray ? "" : `${JSON.stringify(k)}: `));
      line.append(renderJson(v, p, bad, depth + 1));
      frag.append(mark(line, p), i < entries.length - 1 ? ",\n" : "\n");
    });
    const missing = isArray ? [] : [...bad].filter((p) => p.startsWith(pointer + "/") && !p.slice(pointer.length + 1).includes("/") && !(p.slice(pointer.length + 1) in value));
    for (const p of missing) frag.append(pad + "  ", el("mark", { class: "missing" }, `${JSON.stringify(p.slice(pointer.length + 1))}: (missing)`), "\n");
    frag.append(pad + (isArray ? "]" : "}"));
  } else {
    frag.append(JSON.stringify(value));
  }
  return frag;
}

$("window").addEventListener("change", () => { if (state.app) { state.chart && state.chart.plot.destroy(); state.chart = null; connect(); } });
$("event-filter").addEventListener("change", () => { if (state.stats) renderStats(state.stats); renderTail(); });

// ---------- rules ----------

async function loadRules() {
  const r = await api("GET", `/api/apps/${state.app.id}/rules`);
  if (!r.ok) return say(problemText(r));
  $("rule-list").replaceChildren(...r.data.items.map((rule) => el("li", {}, el("button", { type: "button", onclick: () => editRule(rule) }, rule.event), el("span", { class: "muted" }, ` v${rule.version}`))));
  $("rules-empty").hidden = r.data.items.length > 0;
}

async function editRule(rule) {
  const f = $("rule-form");
  f.event.value = rule.event;
  f.schema.value = JSON.stringify(rule.schema, null, 2);
  f.description.value = rule.description || "";
  f.querySelector(".errors").replaceChildren();
  await loadVersions(rule.event);
}

const enc = encodeURIComponent;

async function loadVersions(event) {
  const r = await api("GET", `/api/apps/${state.app.id}/rules/${enc(event)}/versions`);
  const items = r.ok ? r.data.items : [];
  $("versions").replaceChildren(...items.map((v) => el("li", {}, el("button", { type: "button", onclick: () => editRule(v) }, `v${v.version}`), el("span", { class: "muted" }, ` ${fmtTime(v.updated_at)} ${v.description || ""}`))));
}

function listErrors(ul, errors) {
  ul.replaceChildren(...errors.map((e) => el("li", {}, e.pointer ? el("code", {}, e.pointer) : "", " ", e.keyword ? `${e.keyword}: ` : "", e.message)));
}

$("rule-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const errors = f.querySelector(".errors");
  let schema;
  try { schema = JSON.parse(f.schema.value); } catch (err) { return listErrors(errors, [{ pointer: "/schema", message: `is not JSON: ${err.message}` }]); }
  const r = await api("PUT", `/api/apps/${state.app.id}/rules/${enc(f.event.value)}`, { schema, description: f.description.value || null });
  if (!r.ok) return listErrors(errors, r.data && r.data.errors ? r.data.errors : [{ pointer: "", message: problemText(r) }]);
  listErrors(errors, []);
  say(`Saved ${r.data.event} v${r.data.version}.`);
  await loadRules();
  await loadVersions(r.data.event);
});

$("delete-rule").addEventListener("click", async () => {
  const event = $("rule-form").event.value;
  if (!event || !confirm(`Delete the rule for ${event}? Its events become unplanned.`)) return;
  const r = await api("DELETE", `/api/apps/${state.app.id}/rules/${enc(event)}`);
  say(r.ok ? "Rule deleted." : problemText(r));
  await loadRules();
  $("versions").replaceChildren();
});

$("test-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const event = $("rule-form").event.value;
  let properties;
  try { properties = JSON.parse(f.properties.value); } catch (err) { $("test-result").textContent = `Not JSON: ${err.message}`; return; }
  const r = await api("POST", `/api/apps/${state.app.id}/rules/${enc(event)}/test`, { properties });
  if (!r.ok) { $("test-result").textContent = problemText(r); return; }
  $("test-result").textContent = `Result: ${r.data.status}`;
  listErrors(f.querySelector(".errors"), r.data.errors);
});

// ---------- reports and exports ----------

const localInput = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
const describeJob = (j) => `${j.kind === "report" ? "Report" : "Export"} (${j.format.toUpperCase()})`;

async function loadJobs() {
  const f = $("job-form");
  if (!f.from.value) {
    const now = new Date();
    f.from.value = localInput(new Date(now.getTime() - 24 * 3600 * 1000));
    f.to.value = localInput(new Date(now.getTime() + 60 * 1000));
  }
  formKind();
  const r = await api("GET", `/api/apps/${state.app.id}/jobs?limit=50`);
  if (!r.ok) return say(problemText(r));
  renderJobs(r.data.items);
}

function renderJobs(jobs) {
  $("jobs-empty").hidden = jobs.length > 0;
  $("job-list").tBodies[0].replaceChildren(...jobs.map((j) => el("tr", { "data-job": j.id },
    el("th", { scope: "row" }, describeJob(j)),
    el("td", {}, fmtTime(j.created_at)),
    el("td", { class: `job-status ${j.status}` }, j.status === "failed" ? `failed: ${j.error}` : j.status),
    el("td", {}, j.download_url ? el("button", { type: "button", onclick: () => downloadJob(j) }, "Download") : ""),
  )));
  // Watch the unfinished ones until they finish, without reloading.
  stopJobPolling();
  if (jobs.some((j) => j.status === "queued" || j.status === "running")) {
    const app = state.app;
    state.jobTimer = setTimeout(async () => {
      if (state.app !== app || state.view !== "jobs") return;
      const r = await api("GET", `/api/apps/${app.id}/jobs?limit=50`);
      if (r.ok && state.app === app && state.view === "jobs") renderJobs(r.data.items);
    }, 1000);
  }
}

function stopJobPolling() {
  clearTimeout(state.jobTimer);
  state.jobTimer = null;
}

// The file comes with the access token, so it is fetched and handed to the
// browser as a download rather than opened by URL.
async function downloadJob(j) {
  const resp = await fetch(j.download_url, { headers: { Authorization: `Bearer ${state.token}` } });
  if (resp.status === 401 && (await refresh())) return downloadJob(j);
  if (!resp.ok) return say(`The download failed (${resp.status}).`);
  const name = (resp.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(await resp.blob());
  const a = el("a", { href: url, download: name ? name[1] : `${j.kind}.${j.format}` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function formKind() {
  const f = $("job-form");
  const kind = f.what.value.split(":")[0];
  for (const n of f.querySelectorAll(".export-only")) n.hidden = kind !== "export";
  for (const n of f.querySelectorAll(".report-only")) n.hidden = kind !== "report";
}
$("job-form").what.addEventListener("change", formKind);

$("job-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  formError(f);
  const [kind, format] = f.what.value.split(":");
  const time = (v) => (v ? new Date(v).toISOString() : "");
  const body = { from: time(f.from.value), to: time(f.to.value), format };
  if (kind === "export") {
    if (f.status.value) body.status = f.status.value;
    if (f.event.value) body.event = f.event.value;
  } else {
    body.notify = f.notify.checked;
  }
  const r = await api("POST", `/api/apps/${state.app.id}/${kind}s`, body);
  if (!r.ok) return formError(f, problemText(r));
  say(`${kind === "report" ? "Report" : "Export"} queued.`);
  await loadJobs();
});

// ---------- alerts ----------

// Each alert is one card, built once and then updated in place by the poll,
// so an open edit form (with the focus and what was typed in it), an open
// history and a delete waiting for its second click all survive a refresh.
// state.alertRows maps an alert's id to its card (see alertRow);
// state.alertPoll is the refresh in flight: a refresh that finds another
// started after it drops its answer, so an older list never overwrites a
// newer one.

const ALERT_POLL_MS = 3000;
const pct = (v) => `${+(v * 100).toFixed(1)}%`;
const secs = (v) => (v < 120 ? `${Math.round(v)} s` : v < 7200 ? `${Math.round(v / 60)} min` : `${+(v / 3600).toFixed(1)} h`);
const KINDS = {
  violation_rate: {
    name: "Violation rate", figure: pct, event: true, threshold: true,
    hint: "Fires when the share of judged events that were invalid over the window is above the threshold, once at least the minimum number of events were judged.",
    rule: (a) => `more than ${pct(a.threshold)} invalid`,
  },
  volume_drop: {
    name: "Volume drop", figure: pct, event: true, threshold: true,
    hint: "Fires when the window's events fall below the threshold times the usual for that span (the day before), once the usual is at least the minimum number of events.",
    rule: (a) => `below ${pct(a.threshold)} of the usual volume`,
  },
  event_missing: {
    name: "Event missing", figure: secs, event: true, threshold: false,
    hint: "Fires when the event has not arrived for the whole window. Name the event to watch.",
    rule: (a) => `no event for ${secs(a.threshold)}`,
  },
  new_unplanned: {
    name: "New unplanned event", figure: String, event: false, threshold: false,
    hint: "Fires when an unplanned event name never sent before arrives, and resolves after a window with none.",
    rule: () => "a name never seen before",
  },
};
const kindOf = (kind) => KINDS[kind] || { name: kind, figure: String, event: true, threshold: true, hint: "", rule: (a) => `threshold ${a.threshold}` };
const FIELD_NAMES = { kind: "Kind", event: "Event", window: "Window", threshold: "Threshold", min_events: "Minimum events", email: "Email", webhook_url: "Webhook URL", enabled: "Enabled" };
let fieldsMade = 0;

// A fresh copy of the alert fields, each error line tied to its input.
function alertFields() {
  const fields = $("alert-fields").content.cloneNode(true);
  const prefix = `alert-fields-${++fieldsMade}`;
  for (const p of fields.querySelectorAll("[data-error]")) {
    const name = p.dataset.error;
    p.id = `${prefix}-${name || "form"}-error`;
    const input = name && fields.querySelector(`[name="${name}"]`);
    if (input) input.setAttribute("aria-describedby", p.id);
  }
  return fields;
}

// Shows the fields a kind takes, and what it does.
function fitKind(f) {
  const kind = kindOf(f.kind.value);
  for (const n of f.querySelectorAll(".uses-event")) n.hidden = !kind.event;
  for (const n of f.querySelectorAll(".uses-threshold")) n.hidden = !kind.threshold;
  f.event.placeholder = f.kind.value === "event_missing" ? "Required: the event to watch" : "Any event";
  f.querySelector(".kind-hint").textContent = kind.hint;
}

// The body for a POST (no `current`) or for a PATCH of `current`: only the
// fields the kind takes, blanks left to the server's defaults, and the
// webhook only when it changed (a new URL gets a new secret).
function alertBody(f, current) {
  const kind = kindOf(f.kind.value);
  const body = { kind: f.kind.value, window: f.window.value, email: f.email.checked };
  const event = f.event.value.trim();
  if (kind.event && event) body.event = event;
  else if (kind.event && current && current.event) body.event = null;
  if (kind.threshold) {
    if (f.threshold.value !== "") body.threshold = Number(f.threshold.value);
    if (f.min_events.value !== "") body.min_events = Number(f.min_events.value);
  }
  const url = f.webhook_url.value.trim();
  if (!current ? url : url !== (current.webhook_url || "")) body.webhook_url = url || null;
  return body;
}

// What the browser already knows is wrong (a number field holding text
// has an empty value, which would silently mean "the default").
function localAlertErrors(f) {
  return ["threshold", "min_events"].filter((n) => f[n].validity.badInput).map((n) => ({ pointer: `/${n}`, message: "must be a number" }));
}

// A 422's errors beside their fields; anything else in the form's own
// error line.
function alertFormErrors(f, r) {
  for (const p of f.querySelectorAll("[data-error]")) p.textContent = "";
  for (const n of f.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
  if (!r) return;
  const errors = r.errors || (r.data && r.data.errors) || [];
  const rest = [];
  for (const e of errors) {
    const name = (e.pointer || "").replace(/^\//, "");
    const slot = name && f.querySelector(`[data-error="${CSS.escape(name)}"]`);
    const input = name && f.elements[name];
    if (slot && input && !input.closest("[hidden]")) {
      slot.textContent = `${FIELD_NAMES[name] || name} ${e.message}`;
      input.setAttribute("aria-invalid", "true");
    } else {
      rest.push(`${e.pointer || "body"}: ${e.message}`);
    }
  }
  const general = f.querySelector('[data-error=""]');
  if (r.status === undefined) general.textContent = rest.length ? rest.join("; ") : "Check the fields marked above.";
  else if (!errors.length) general.textContent = problemText(r);
  else general.textContent = [rest.length ? rest.join("; ") : "", "Check the fields marked above."].join(" ").trim();
  const first = f.querySelector("[aria-invalid]");
  if (first) first.focus();
}

function setupAlertForm() {
  const f = $("alert-form");
  f.insertBefore(alertFields(), f.querySelector("button[type=submit]"));
  f.kind.addEventListener("change", () => fitKind(f));
  fitKind(f);
}
setupAlertForm();

$("alert-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const local = localAlertErrors(f);
  if (local.length) return alertFormErrors(f, { errors: local });
  alertFormErrors(f);
  const r = await api("POST", `/api/apps/${state.app.id}/alerts`, alertBody(f));
  if (!r.ok) return alertFormErrors(f, r);
  f.reset();
  fitKind(f);
  say(`Alert created: ${kindOf(r.data.kind).name}${r.data.event ? ` on ${r.data.event}` : ""}. It is checked every few seconds.`);
  if (r.data.webhook_secret) showSecret(r.data.webhook_secret);
  await loadAlerts();
});

function showSecret(secret) {
  $("secret-value").textContent = secret;
  $("secret-box").hidden = false;
  $("copy-secret").focus();
}
$("copy-secret").addEventListener("click", () => copy($("secret-value").textContent, "Secret"));
$("hide-secret").addEventListener("click", () => {
  $("secret-box").hidden = true;
  $("secret-value").textContent = "";
});

function openAlerts() {
  if (state.alertApp !== state.app) {
    state.alertApp = state.app;
    state.alertRows = new Map();
    $("alert-list").replaceChildren();
  }
  $("secret-box").hidden = true;
  $("secret-value").textContent = "";
  loadAlerts();
}

// Fetches the list and every open history, renders them, and comes back in
// a few seconds while the tab stays open.
async function loadAlerts() {
  stopAlertPolling();
  const app = state.app;
  const token = {};
  state.alertPoll = token;
  const current = () => state.alertPoll === token && state.app === app && state.view === "alerts";
  const r = await api("GET", `/api/apps/${app.id}/alerts?limit=50`);
  if (!current()) return;
  if (!r.ok) say(problemText(r));
  else renderAlerts(r.data.items);
  const open = [...state.alertRows.values()].filter((row) => row.historyOpen);
  const histories = await Promise.all(open.map((row) => api("GET", `/api/apps/${app.id}/alerts/${row.alert.id}/history?limit=20`)));
  if (!current()) return;
  open.forEach((row, i) => renderHistory(row, histories[i]));
  state.alertTimer = setTimeout(loadAlerts, ALERT_POLL_MS);
}

function stopAlertPolling() {
  clearTimeout(state.alertTimer);
  state.alertTimer = null;
  state.alertPoll = null;
}

function renderAlerts(items) {
  const list = $("alert-list");
  const seen = new Set(items.map((a) => a.id));
  for (const [id, row] of state.alertRows) {
    if (!seen.has(id)) {
      row.li.remove();
      state.alertRows.delete(id);
    }
  }
  items.forEach((alert, i) => {
    let row = state.alertRows.get(alert.id);
    if (!row) {
      row = alertRow(alert);
      state.alertRows.set(alert.id, row);
    }
    updateRow(row, alert);
    // Only move what is out of place: moving a card would take the focus
    // out of its edit form.
    if (list.children[i] !== row.li) list.insertBefore(row.li, list.children[i] || null);
  });
  $("alerts-empty").hidden = items.length > 0;
}

// One alert's card: its summary, its actions, its edit form and history.
function alertRow(alert) {
  const row = { alert, historyOpen: false, armed: null };
  const id = `alert-${alert.id}`;
  row.badge = el("span", { class: "badge" });
  row.muted = el("span", { class: "badge badge-muted" }, "muted");
  row.title = el("strong", {});
  row.facts = el("dl", { class: "facts" });
  row.edit = el("button", { type: "button", "aria-expanded": "false", "aria-controls": `${id}-edit`, onclick: () => toggleEdit(row) }, "Edit");
  row.mute = el("button", { type: "button", onclick: () => toggleMute(row) });
  row.historyButton = el("button", { type: "button", "aria-expanded": "false", "aria-controls": `${id}-history`, onclick: () => toggleHistory(row) }, "History");
  row.del = el("button", { type: "button", class: "danger", onclick: () => deleteAlert(row) }, "Delete");
  row.form = el("form", { id: `${id}-edit`, class: "alert-edit", novalidate: "" });
  row.form.hidden = true;
  row.form.append(
    alertFields(),
    el("p", { class: "actions" }, el("button", { type: "submit" }, "Save changes"), el("button", { type: "button", onclick: () => closeEdit(row) }, "Cancel")),
  );
  row.form.kind.addEventListener("change", () => fitKind(row.form));
  row.form.addEventListener("submit", (e) => { e.preventDefault(); saveAlert(row); });
  row.historyList = el("ol", { class: "history" });
  row.historyEmpty = el("p", { class: "empty" }, "No firings yet.");
  row.history = el("div", { id: `${id}-history`, class: "history-box" }, el("h4", {}, "History"), row.historyEmpty, row.historyList);
  row.history.hidden = true;
  row.actions = el("p", { class: "actions", role: "group" }, row.edit, row.mute, row.historyButton, row.del);
  row.li = el("li", { class: "card alert", "data-alert": alert.id },
    el("p", { class: "alert-title" }, row.badge, " ", row.muted, " ", row.title),
    row.facts, row.actions, row.form, row.history);
  return row;
}

function updateRow(row, a) {
  row.alert = a;
  const kind = kindOf(a.kind);
  row.li.dataset.kind = a.kind;
  row.li.classList.toggle("firing", a.enabled && a.state === "firing");
  row.badge.textContent = a.state;
  row.badge.className = `badge badge-${a.state === "firing" ? "firing" : "ok"}`;
  row.muted.hidden = a.enabled;
  row.title.textContent = `${kind.name} · ${a.event ?? (kind.event ? "all events" : "every event name")}`;
  row.actions.setAttribute("aria-label", `${kind.name} alert on ${a.event ?? "all events"}`);
  const fact = (term, ...value) => el("div", {}, el("dt", {}, term), el("dd", {}, ...value));
  const told = [a.email ? "email" : "", a.webhook_url ? "webhook" : ""].filter(Boolean).join(" and ") || "no one";
  row.facts.replaceChildren(
    fact("Fires on", kind.rule(a)),
    fact("Window", a.window),
    ...(a.min_events === null ? [] : [fact("Minimum events", a.min_events)]),
    fact("Last figure", a.value === null ? "not checked yet" : kind.figure(a.value)),
    fact("Checked", fmtTime(a.evaluated_at)),
    fact("Tells", told),
    fact("Enabled", a.enabled ? "yes" : "no, muted"),
  );
  row.mute.textContent = a.enabled ? "Mute" : "Unmute";
}

function toggleEdit(row) {
  if (!row.form.hidden) return closeEdit(row);
  const f = row.form;
  const a = row.alert;
  const kind = kindOf(a.kind);
  f.kind.value = a.kind;
  f.event.value = a.event ?? "";
  f.window.value = a.window;
  f.threshold.value = kind.threshold ? a.threshold : "";
  f.min_events.value = a.min_events ?? "";
  f.email.checked = a.email;
  f.webhook_url.value = a.webhook_url ?? "";
  fitKind(f);
  alertFormErrors(f);
  f.hidden = false;
  row.edit.setAttribute("aria-expanded", "true");
  f.kind.focus();
}

function closeEdit(row) {
  row.form.hidden = true;
  row.edit.setAttribute("aria-expanded", "false");
  row.edit.focus();
}

async function saveAlert(row) {
  const f = row.form;
  const local = localAlertErrors(f);
  if (local.length) return alertFormErrors(f, { errors: local });
  alertFormErrors(f);
  const r = await api("PATCH", `/api/apps/${state.app.id}/alerts/${row.alert.id}`, alertBody(f, row.alert));
  if (!r.ok) return alertFormErrors(f, r);
  updateRow(row, r.data);
  closeEdit(row);
  say("Alert saved. It starts again from ok and is checked afresh.");
  if (r.data.webhook_secret) showSecret(r.data.webhook_secret);
  await loadAlerts();
}

async function toggleMute(row) {
  const r = await api("PATCH", `/api/apps/${state.app.id}/alerts/${row.alert.id}`, { enabled: !row.alert.enabled });
  if (!r.ok) return say(problemText(r));
  updateRow(row, r.data);
  say(r.data.enabled ? "Alert unmuted." : "Alert muted: it will not fire or notify until you unmute it.");
  await loadAlerts();
}

async function toggleHistory(row) {
  row.historyOpen = !row.historyOpen;
  row.history.hidden = !row.historyOpen;
  row.historyButton.setAttribute("aria-expanded", row.historyOpen);
  if (row.historyOpen) renderHistory(row, await api("GET", `/api/apps/${state.app.id}/alerts/${row.alert.id}/history?limit=20`));
}

function renderHistory(row, r) {
  if (!r.ok) {
    row.historyEmpty.textContent = problemText(r);
    row.historyEmpty.hidden = false;
    return;
  }
  const kind = kindOf(row.alert.kind);
  row.historyEmpty.textContent = "No firings yet.";
  row.historyEmpty.hidden = r.data.items.length > 0;
  row.historyList.replaceChildren(...r.data.items.map((h) => el("li", { class: `history-item ${h.state}` },
    el("span", { class: `badge badge-${h.state === "firing" ? "firing" : "ok"}` }, h.state), " ",
    el("time", { datetime: h.at }, fmtTime(h.at)), " ",
    el("span", { class: "figure" }, `figure ${kind.figure(h.value)} against threshold ${kind.figure(h.threshold)}`),
    ...(h.events && h.events.length ? [" ", el("span", { class: "muted" }, `new: ${h.events.join(", ")}`)] : []),
  )));
}

// Two clicks, the second within five seconds, rather than a dialog.
async function deleteAlert(row) {
  if (!row.armed) {
    row.del.textContent = "Click again to delete";
    row.armed = setTimeout(() => { row.armed = null; row.del.textContent = "Delete"; }, 5000);
    return;
  }
  clearTimeout(row.armed);
  row.armed = null;
  row.del.textContent = "Delete";
  const r = await api("DELETE", `/api/apps/${state.app.id}/alerts/${row.alert.id}`);
  if (!r.ok && r.status !== 404) return say(problemText(r));
  row.li.remove();
  state.alertRows.delete(row.alert.id);
  say("Alert deleted with its history.");
  $("alerts-title").focus();
  await loadAlerts();
}

start();
