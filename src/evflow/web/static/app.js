// The evflow dashboard: plain JS, no build step. Every piece of user data (ids, names,
// metadata, outputs, errors) reaches the page through textContent or an attribute set
// with setAttribute: never as HTML.
"use strict";

const STATUSES = ["RUNNING", "PENDING", "FAILED", "RESUMABLE", "CANCELED", "SUCCESSFUL"];
const LIST_POLL_MS = 2000;
let info = { read_only: true, storage: "", messages: false };
let stopView = () => {};

// -- helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  return node;
}

function badge(status) {
  return el("span", { class: "badge s-" + status, "data-status": status, text: status });
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(response.status + " " + (body && body.error ? body.error + ": " : "") + detail);
  }
  return body;
}

function wfPath(id) {
  return "api/workflows/" + encodeURIComponent(id);
}

function fmtTime(t) {
  if (t === undefined || t === null) return "-";
  const d = new Date(t * 1000);
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtDuration(seconds) {
  if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
  if (seconds < 120) return seconds.toFixed(2) + " s";
  return (seconds / 60).toFixed(1) + " min";
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

// -- the list -----------------------------------------------------------------------------

function listView(main, params) {
  const filter = params.get("status");
  const counts = el("div", { class: "filters" });
  const tbody = el("tbody");
  const note = el("p", { class: "muted" });
  main.replaceChildren(
    counts,
    el("table", { class: "workflows" }, el("thead", {}, el("tr", {}, el("th", { text: "workflow" }), el("th", { text: "status" }))), tbody),
    note,
  );
  const rows = new Map();
  let first = true;
  let timer = null;
  let stopped = false;

  function filterButton(label, status, n) {
    const on = (status || null) === (filter || null);
    const href = status ? "#/?status=" + encodeURIComponent(status) : "#/";
    return el("button", { class: on ? "on" : "", "data-filter": status || "ALL", onclick: () => { location.hash = href; } }, `${label} (${n})`);
  }

  function render(list) {
    const tally = {};
    for (const item of list) tally[item.status] = (tally[item.status] || 0) + 1;
    counts.replaceChildren(filterButton("all", null, list.length), ...STATUSES.filter((s) => tally[s]).map((s) => filterButton(s, s, tally[s])));
    const shown = filter ? list.filter((item) => item.status === filter) : list;
    const seen = new Set();
    const fragment = document.createDocumentFragment();
    for (const item of shown) {
      seen.add(item.workflow_id);
      const row = rows.get(item.workflow_id);
      if (row) {
        if (row.status !== item.status) {
          row.status = item.status;
          row.cell.replaceChildren(badge(item.status));
        }
        continue;
      }
      const cell = el("td", {}, badge(item.status));
      const tr = el("tr", { "data-id": item.workflow_id }, el("td", { class: "id" }, el("a", { href: "#/wf/" + encodeURIComponent(item.workflow_id), text: item.workflow_id })), cell);
      rows.set(item.workflow_id, { tr, cell, status: item.status });
      fragment.append(tr);
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    tbody.append(fragment);
    note.textContent = shown.length ? "" : "No workflows" + (filter ? " with status " + filter : "") + ".";
    if (first) {
      first = false;
      performance.mark("evflow-list-rendered");
      document.body.dataset.listRendered = String(Math.round(performance.now()));
    }
  }

  async function poll() {
    try {
      render(await api("api/workflows"));
    } catch (error) {
      note.textContent = String(error.message);
      note.className = "error";
    }
    if (!stopped) timer = setTimeout(poll, LIST_POLL_MS);
  }
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// -- one workflow -------------------------------------------------------------------------

function describe(event) {
  switch (event.type) {
    case "WorkflowStarted":
      if (event.resume) return "resume";
      return (event.kind === "actor" ? "actor " + event.actor_class : `workflow output=${event.output} steps=${(event.steps || []).length}`) +
        (event.user_metadata ? " metadata=" + JSON.stringify(event.user_metadata) : "");
    case "StepStarted":
      return `${event.name} attempt=${event.attempt || 1}`;
    case "StepFinished":
      if (event.continuation_output) return `${event.name} continues as ${event.continuation_output}`;
      return `${event.name}` + (event.output_preview !== undefined ? " -> " + event.output_preview : " (output not checkpointed)");
    case "StepFailed":
      return `${event.name} attempt=${event.attempt} ${event.will_retry ? "will retry" : "gave up"}: ${event.error_text}`;
    case "WorkflowFinished":
      return event.output_preview !== undefined ? "-> " + event.output_preview : "";
    case "WorkflowFailed":
      return (event.step ? `at ${event.step}: ` : "") + event.error_text;
    case "MetadataAttached":
      return `${event.step || "(workflow)"} ${JSON.stringify(event.metadata)}`;
    case "ActorCallSubmitted":
      return `${event.step.name} (${event.step.func})`;
    default: {
      const rest = Object.assign({}, event);
      delete rest.type; delete rest.seq; delete rest.time;
      return JSON.stringify(rest).slice(0, 200);
    }
  }
}

// Each attempt of each step as a segment of time, from the events up to seq ``asOf``.
function segments(events, asOf, endTime) {
  const out = new Map();
  const open = new Map();
  const close = (name, time, kind) => {
    const seg = open.get(name);
    if (seg) { seg.end = time; seg.kind = kind; open.delete(name); }
  };
  const marks = [];
  for (const ev of events) {
    if (ev.seq > asOf) break;
    if (ev.type === "StepStarted") {
      close(ev.name, ev.time, "retry");
      const seg = { start: ev.time, end: null, kind: "running", attempt: ev.attempt || 1 };
      if (!out.has(ev.name)) out.set(ev.name, []);
      out.get(ev.name).push(seg);
      open.set(ev.name, seg);
    } else if (ev.type === "StepFinished") {
      close(ev.name, ev.time, "ok");
    } else if (ev.type === "StepFailed") {
      close(ev.name, ev.time, ev.will_retry ? "retry" : "failed");
    } else if (["WorkflowStarted", "WorkflowCanceled", "WorkflowFinished", "WorkflowFailed"].includes(ev.type)) {
      const kind = ev.type === "WorkflowCanceled" ? "canceled" : "interrupted";
      for (const name of [...open.keys()]) close(name, ev.time, kind);
      if (ev.type === "WorkflowStarted" && ev.resume) marks.push(ev.time);
    }
  }
  for (const seg of open.values()) seg.end = endTime;
  return { bySteps: out, marks };
}

function renderTimeline(box, view, events, asOf) {
  const shown = events.filter((ev) => ev.seq <= asOf);
  if (!shown.length) { box.replaceChildren(); return; }
  const t0 = shown[0].time;
  const running = view.metadata.status === "RUNNING";
  const endTime = asOf >= view.last_seq && running ? Math.max(Date.now() / 1000, shown[shown.length - 1].time) : shown[shown.length - 1].time;
  const span = Math.max(endTime - t0, 1e-3);
  const pct = (t) => (100 * (t - t0) / span).toFixed(3) + "%";
  const { bySteps, marks } = segments(events, asOf, endTime);
  const rows = [];
  for (const step of view.steps) {
    const track = el("div", { class: "tl-track" });
    for (const seg of bySteps.get(step.name) || []) {
      const bar = el("div", { class: "tl-bar k-" + seg.kind, title: `${step.name} attempt ${seg.attempt}: ${seg.kind}, ${fmtDuration(seg.end - seg.start)}` });
      bar.style.left = pct(seg.start);
      bar.style.width = `calc(${pct(seg.end)} - ${pct(seg.start)})`;
      track.append(bar);
    }
    for (const t of marks) {
      const mark = el("div", { class: "tl-mark", title: "resumed at " + fmtTime(t) });
      mark.style.left = pct(t);
      track.append(mark);
    }
    const label = step.name + (step.attempts > 1 ? ` ×${step.attempts}` : "");
    rows.push(el("div", { class: "tl-row", "data-step": step.name }, el("div", { class: "tl-name", title: `${step.name}: ${step.status}` }, badge(step.status), " ", label), track));
  }
  box.replaceChildren(...rows, el("div", { class: "tl-axis" }, el("span", { text: fmtTime(t0) }), el("span", { text: fmtDuration(span) }), el("span", { text: fmtTime(endTime) })));
}

function renderDag(box, view) {
  const steps = view.steps;
  const byName = new Map(steps.map((s) => [s.name, s]));
  const level = new Map();
  const depth = (name, seen) => {
    if (level.has(name)) return level.get(name);
    const step = byName.get(name);
    if (!step || seen.has(name)) return 0;
    seen.add(name);
    let d = 0;
    for (const dep of step.deps) d = Math.max(d, depth(dep, seen) + 1);
    if (step.parent) d = Math.max(d, depth(step.parent, seen) + 1);
    level.set(name, d);
    return d;
  };
  const columns = [];
  for (const step of steps) {
    const d = depth(step.name, new Set());
    (columns[d] = columns[d] || []).push(step);
  }
  const W = 160, H = 28, GX = 40, GY = 12;
  const pos = new Map();
  columns.forEach((column, x) => column.forEach((step, y) => pos.set(step.name, { x: 8 + x * (W + GX), y: 8 + y * (H + GY) })));
  const width = 16 + columns.length * (W + GX);
  const height = 16 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  for (const step of steps) {
    const to = pos.get(step.name);
    const edge = (from, cls) => { if (from) root.append(svg("line", { x1: from.x + W, y1: from.y + H / 2, x2: to.x, y2: to.y + H / 2, class: cls })); };
    for (const dep of step.deps) edge(pos.get(dep), "dep");
    if (step.parent) edge(pos.get(step.parent), "cont");
  }
  for (const step of steps) {
    const at = pos.get(step.name);
    const group = svg("g", { "data-step": step.name });
    const title = svg("title");
    title.textContent = `${step.name} (${step.func}): ${step.status}`;
    const text = svg("text", { x: at.x + 8, y: at.y + H / 2 + 4 });
    text.textContent = step.name.length > 24 ? step.name.slice(0, 23) + "…" : step.name;
    group.append(title, svg("rect", { x: at.x, y: at.y, width: W, height: H, class: "n-" + step.status }), text);
    root.append(group);
  }
  box.replaceChildren(root);
}

function workflowView(main, id) {
  const status = el("span", { id: "status" });
  const message = el("span", { class: "message muted" });
  const cancel = el("button", { id: "cancel", text: "Cancel" });
  const resume = el("button", { id: "resume", text: "Resume" });
  const actions = el("div", { class: "actions" + (info.read_only ? " hidden" : "") }, cancel, " ", resume, message);
  const slider = el("input", { id: "asof", type: "range", min: "1", max: "1", value: "1", step: "1" });
  const asOfLabel = el("span", { id: "asof-label", class: "muted" });
  const metadata = el("pre", { id: "metadata" });
  const stepInfo = el("pre", { id: "step-metadata", class: "hidden" });
  const timeline = el("div", { class: "timeline", id: "timeline" });
  const dag = el("div", { class: "dag", id: "dag" });
  const eventRows = el("tbody");
  const problem = el("p", { class: "error" });
  main.replaceChildren(
    el("h1", {}, el("span", { id: "workflow-id", text: id }), " ", status),
    actions,
    problem,
    el("h2", { text: "As of event" }),
    el("div", { class: "asof" }, slider, asOfLabel),
    el("div", { class: "grid" },
      el("div", {}, el("h2", { text: "Metadata" }), metadata, stepInfo),
      el("div", {}, el("h2", { text: "DAG" }), dag)),
    el("h2", { text: "Timeline" }),
    timeline,
    el("h2", { text: "Event log" }),
    el("table", { class: "events" }, el("thead", {}, el("tr", {}, el("th", { text: "seq" }), el("th", { text: "time" }), el("th", { text: "type" }), el("th", { text: "details" }))), eventRows),
  );

  const events = [];
  const rows = [];
  let view = null;
  let live = true;
  let source = null;
  let stopped = false;
  let refreshTimer = null;

  function asOf() {
    return live ? (view ? view.last_seq : events.length) : Number(slider.value);
  }

  function render() {
    if (!view) return;
    const at = asOf();
    status.replaceChildren(badge(view.metadata.status));
    const current = view.metadata.status;
    cancel.disabled = !live || current === "SUCCESSFUL" || current === "CANCELED";
    resume.disabled = !live || !["FAILED", "RESUMABLE", "CANCELED"].includes(current);
    metadata.textContent = json(view.metadata) + (view.error ? "\n\nerror: " + view.error + (view.failed_step ? " (at step " + view.failed_step + ")" : "") : "");
    const event = events[at - 1];
    asOfLabel.textContent = `event ${at} of ${view.last_seq}` + (event ? `: ${event.type}` : "") + (live ? " (now, live)" : "");
    renderDag(dag, view);
    renderTimeline(timeline, view, events, at);
    rows.forEach((row, i) => {
      row.classList.toggle("later", i + 1 > at);
      row.classList.toggle("at", i + 1 === at && !live);
    });
  }

  async function load() {
    const at = live ? "" : "?as_of=" + slider.value;
    try {
      const fresh = await api(wfPath(id) + "/state" + at);
      if (stopped) return;
      view = fresh;
      problem.textContent = "";
      slider.max = String(Math.max(view.last_seq, events.length, 1));
      if (live) slider.value = slider.max;
      render();
    } catch (error) {
      problem.textContent = error.message;
    }
  }

  function scheduleLoad() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; load(); }, 150);
  }

  function addEvent(event) {
    if (event.seq !== events.length + 1) return; // a repeat after a reconnect
    events.push(event);
    const row = el("tr", { "data-seq": String(event.seq), onclick: () => moveTo(event.seq) },
      el("td", { class: "seq", text: String(event.seq) }), el("td", { text: fmtTime(event.time) }),
      el("td", { text: event.type }), el("td", { text: describe(event) }));
    rows.push(row);
    eventRows.append(row);
  }

  function follow() {
    if (source || stopped) return;
    source = new EventSource(wfPath(id) + "/events/stream?from=" + (events.length + 1));
    source.onmessage = (message) => {
      addEvent(JSON.parse(message.data));
      slider.max = String(Math.max(events.length, Number(slider.max)));
      if (live) { slider.value = slider.max; scheduleLoad(); }
    };
    source.addEventListener("end", () => { source.close(); source = null; scheduleLoad(); });
    source.onerror = () => { if (source && source.readyState === EventSource.CLOSED) source = null; };
  }

  function moveTo(seq) {
    slider.value = String(seq);
    onSlide();
  }

  function onSlide() {
    live = Number(slider.value) >= Number(slider.max);
    load();
  }

  slider.addEventListener("input", onSlide);

  async function act(what) {
    message.textContent = what + "…";
    try {
      const result = await api(wfPath(id) + "/" + what, { method: "POST" });
      message.textContent = what + ": " + result.status;
    } catch (error) {
      message.textContent = error.message;
    }
    live = true;
    await load();
    follow();
  }
  cancel.addEventListener("click", () => act("cancel"));
  resume.addEventListener("click", () => act("resume"));

  (async () => {
    try {
      for (const event of await api(wfPath(id) + "/events")) addEvent(event);
    } catch (error) {
      problem.textContent = error.message;
      return;
    }
    await load();
    follow();
  })();

  return () => {
    stopped = true;
    if (source) source.close();
    clearTimeout(refreshTimer);
  };
}

// -- routing ------------------------------------------------------------------------------

function route() {
  stopView();
  const main = document.getElementById("main");
  const hash = location.hash.slice(1) || "/";
  if (hash.startsWith("/wf/")) {
    stopView = workflowView(main, decodeURIComponent(hash.slice(4)));
  } else {
    const query = hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : "";
    stopView = listView(main, new URLSearchParams(query));
  }
}

async function start() {
  try {
    info = await api("api/info");
  } catch (error) {
    document.getElementById("main").replaceChildren(el("p", { class: "error", text: error.message }));
    return;
  }
  document.getElementById("storage").textContent = info.storage;
  document.getElementById("mode").classList.toggle("hidden", !info.read_only);
  window.addEventListener("hashchange", route);
  route();
}

start();
