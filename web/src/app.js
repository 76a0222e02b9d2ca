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
  for (const v of ["live", "rules", "jobs"]) {
    $(v).hidden = view !== v;
    $(`tab-${v}`).setAttribute("aria-pressed", view === v);
  }
  stopJobPolling();
  if (view === "live") return startLive();
  stopStream();
  if (view === "rules") loadRules(); else loadJobs();
}
$("tab-live").addEventListener("click", () => setView("live"));
$("tab-rules").addEventListener("click", () => setView("rules"));
$("tab-jobs").addEventListener("click", () => setView("jobs"));

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

start();
