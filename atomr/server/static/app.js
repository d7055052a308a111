// atomr web UI: reads the JSON API of `atomr serve`; no dependencies, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const TOKEN_KEY = "atomr.token";
const PAGE = document.body.dataset.page;

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid !== null && kid !== undefined) node.append(kid instanceof Node ? kid : String(kid));
  }
  return node;
}

function svg(tag, attrs, ...kids) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
}

const enc = encodeURIComponent;
const json = (v) => JSON.stringify(v, null, 2);
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "");
const badge = (status) => el("span", { class: `badge b-${status}`, text: status });

function flash(text, bad) {
  const f = $("#flash");
  f.textContent = text;
  f.className = bad ? "error" : "ok";
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.textContent = ""; }, 6000);
}

// -- the API, with the token asked for once per tab --------------------------------------

let tokenAsked = null;

function askToken() {
  if (!tokenAsked) {
    tokenAsked = new Promise((resolve) => {
      const form = $("#login");
      form.hidden = false;
      $("#login-token").focus();
      form.onsubmit = (e) => {
        e.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, $("#login-token").value);
        form.hidden = true;
        tokenAsked = null;
        resolve();
      };
    });
  }
  return tokenAsked;
}

async function api(path, body, method) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method: method || (body === undefined ? "GET" : "POST"), headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) { await askToken(); continue; }
    const doc = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error(doc.message || r.statusText);
      err.name = doc.error || `HTTP ${r.status}`;
      throw err;
    }
    return doc;
  }
}

function every(ms, fn) {
  let timer = null;
  const tick = async () => {
    try { await fn(); } catch (e) { flash(`${e.name}: ${e.message}`, true); }
    timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
  };
  tick();
  return () => clearTimeout(timer);
}

// -- the DAG: one row of boxes per layer ------------------------------------------------

function drawGraph(box, graph, statuses) {
  const W = 8, H = 34, GAP = 28, ROW = 76, PAD = 16;
  const pos = {};
  const widths = graph.layers.map((layer) => layer.reduce(
    (sum, s) => sum + Math.max(84, s.length * W + 30) + GAP, -GAP));
  const width = Math.max(...widths, 200) + 2 * PAD;
  graph.layers.forEach((layer, i) => {
    let x = PAD + (width - 2 * PAD - widths[i]) / 2;
    for (const s of layer) {
      const w = Math.max(84, s.length * W + 30);
      pos[s] = { x, y: PAD + i * ROW, w };
      x += w + GAP;
    }
  });
  const height = PAD * 2 + (graph.layers.length - 1) * ROW + H;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  root.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z" }))));
  for (const e of graph.edges) {
    const a = pos[e.from], b = pos[e.to];
    const x1 = a.x + a.w / 2, y1 = a.y + H, x2 = b.x + b.w / 2, y2 = b.y;
    root.append(svg("line", { x1, y1, x2, y2: y2 - 1, class: "edge", "marker-end": "url(#arrow)" }));
    if (e.label) {
      const t = svg("text", { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: "edge-label" });
      t.textContent = e.label;
      root.append(t);
    }
  }
  for (const [s, p] of Object.entries(pos)) {
    const kind = graph.kinds[s];
    const st = (statuses && statuses[s]) || "pending";
    const g = svg("g", { class: `node st-${st}`, "data-step": s, "data-status": st });
    const title = svg("title");
    title.textContent = `${s}: ${st}${kind !== "step" ? ` (${kind})` : ""}`;
    g.append(title, svg("rect", { x: p.x, y: p.y, width: p.w, height: H, rx: kind === "step" ? 6 : 16 }));
    const t = svg("text", { x: p.x + p.w / 2, y: p.y + H / 2 + 5, "text-anchor": "middle" });
    t.textContent = s + (kind === "Loop" ? " ↻" : kind === "Map" ? " ⇉" : "");
    g.append(t);
    root.append(g);
  }
  box.replaceChildren(root);
}

// -- runs ------------------------------------------------------------------------------------

async function pageRuns() {
  const body = $("#runs-body");
  const params = new URLSearchParams(location.search);
  $("#f-status").value = params.get("status") || "";
  const wfs = await api("/api/workflows");
  for (const w of wfs.workflows) $("#f-workflow").append(el("option", { text: w.id }));
  $("#f-workflow").value = params.get("workflow_id") || "";
  let cursor = null;
  const query = () => {
    const q = new URLSearchParams({ limit: "50" });
    if ($("#f-status").value) q.set("status", $("#f-status").value);
    if ($("#f-workflow").value) q.set("workflow_id", $("#f-workflow").value);
    return q;
  };
  const row = (r) => el("tr", { "data-run": r.run_id },
    el("td", {}, badge(r.status)), el("td", { text: r.workflow_id }),
    el("td", {}, el("a", { href: `/runs/${enc(r.workflow_id)}/${enc(r.run_id)}`, text: r.run_id })),
    el("td", { class: "num", text: r.super_step }), el("td", { text: when(r.updated_ms) }),
    el("td", { class: "muted", text: when(r.created_ms) }));
  const load = async (more) => {
    const q = query();
    if (more && cursor) q.set("cursor", cursor);
    const doc = await api(`/api/runs?${q}`);
    const rows = doc.runs.map(row);
    if (more) body.append(...rows);
    else body.replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no runs" }))]));
    cursor = doc.next_cursor;
    $("#more").hidden = !cursor;
    $("#count").textContent = `${body.querySelectorAll("tr[data-run]").length} shown`;
  };
  const refilter = () => {
    const q = query();
    q.delete("limit");
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    load(false);
  };
  $("#f-status").onchange = refilter;
  $("#f-workflow").onchange = refilter;
  $("#more").onclick = () => load(true);
  // live: the first page again every two seconds (unless more pages are open)
  every(2000, async () => { if ($("#f-live").checked && !$("#more").dataset.opened) await load(false); });
  $("#more").addEventListener("click", () => { $("#more").dataset.opened = "1"; });
}

// -- one run -------------------------------------------------------------------------------

function diffRows(before, after) {
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])].sort();
  const rows = [];
  for (const k of keys) {
    const a = before ? before[k] : undefined, b = after[k];
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    const kind = a === undefined ? "added" : b === undefined ? "removed" : "changed";
    rows.push(el("tr", { class: kind }, el("th", { text: k }),
      el("td", {}, el("pre", { text: a === undefined ? "" : json(a) })),
      el("td", {}, el("pre", { text: b === undefined ? "" : json(b) }))));
  }
  if (!rows.length) return [el("tr", {}, el("td", { class: "muted", text: "no change" }))];
  return [el("tr", {}, el("th", { text: "channel" }), el("th", { text: "before" }), el("th", { text: "after" })),
    ...rows];
}

async function pageRun() {
  const wf = document.body.dataset.wf, run = document.body.dataset.run;
  const base = `/api/runs/${enc(wf)}/${enc(run)}`;
  let graph = null, points = [], selected = -1, follow = true, state = null, sig = "";

  const showPoint = (i) => {
    selected = i;
    const cp = points[i];
    document.querySelectorAll("#timeline li").forEach((li, j) => li.classList.toggle("sel", j === i));
    $("#cp-title").textContent = `super-step ${cp.super_step} · ${cp.label}`;
    $("#cp-values").textContent = json(cp.values);
    $("#cp-diff").replaceChildren(...diffRows(i > 0 ? points[i - 1].values : null, cp.values));
    $("#btn-fork").hidden = false;
  };

  const answerForm = (it) => {
    const area = el("textarea", { rows: 3, class: "answer", "data-interrupt": it.id,
      placeholder: 'a JSON value, e.g. "yes" or {"approved": true}' });
    const send = async (e) => {
      e.preventDefault();
      let value;
      try { value = JSON.parse(area.value); } catch (err) { flash(`the answer is not JSON: ${err.message}`, true); return; }
      try {
        await api(`${base}/resume`, { resume: { [it.id]: value } });
        flash(`answered ${it.id}`);
        follow = true;
        await refresh();
      } catch (err) { flash(`${err.name}: ${err.message}`, true); }
    };
    return el("form", { class: "card interrupt", onsubmit: send },
      el("h3", {}, "step ", el("code", { text: it.step_id }), " asks ", el("span", { class: "muted", text: it.id })),
      el("pre", { class: "json", text: json(it.payload) }),
      el("label", {}, "Answer (JSON)", area), el("button", { type: "submit", text: "Answer and resume" }));
  };

  const refresh = async () => {
    if (!graph) graph = (await api(`/api/workflows/${enc(wf)}`)).graph;
    const [view, steps, hist] = await Promise.all([api(base), api(`${base}/steps`), api(`${base}/history`)]);
    state = view;
    const s = $("#run-status");
    s.textContent = view.status;
    s.className = `badge b-${view.status}`;
    const facts = [`super-step ${view.super_step}`];
    if (view.next.length) facts.push(`next: ${view.next.join(", ")}`);
    if (view.pause_reason) facts.push(`paused: ${view.pause_reason}`);
    if (view.meta.forked_from) facts.push(`forked from ${view.meta.forked_from}`);
    if (view.owner) facts.push(`executing in worker ${view.owner}`);
    $("#run-facts").textContent = facts.join(" · ");
    $("#run-error").textContent = view.error
      ? `${view.error.error_type} at ${view.error.step_id || "?"}: ${view.error.message}` : "";
    const tb = (view.error && view.error.traceback) || "";
    $("#run-traceback").textContent = tb;
    $("#run-traceback-box").hidden = !tb;
    $("#btn-cancel").hidden = ["done", "cancelled"].includes(view.status);
    $("#btn-continue").hidden = !((view.status === "paused" && !view.interrupts.length) || view.status === "failed");
    $("#btn-continue").textContent = view.status === "failed" ? "Retry" : "Continue";
    const ids = view.interrupts.map((i) => i.id).join(",");
    if (ids !== sig) {
      sig = ids;
      $("#interrupts").replaceChildren(...view.interrupts.map(answerForm));
    }
    $("#interrupts-box").hidden = !view.interrupts.length;
    drawGraph($("#graph"), graph, steps.steps);
    const grew = hist.checkpoints.length !== points.length;
    points = hist.checkpoints;
    if (grew) {
      $("#timeline").replaceChildren(...points.map((cp, i) => el("li", { onclick: () => { follow = i === points.length - 1; showPoint(i); } },
        el("span", { class: "ss", text: cp.super_step }), el("span", { text: cp.label }),
        el("span", { class: "muted", text: when(cp.at_ms) }))));
      if (follow || selected < 0) showPoint(points.length - 1);
      else showPoint(selected);
    }
  };

  $("#btn-cancel").onclick = async () => {
    const reason = prompt("Cancel this run? Reason (optional):", "");
    if (reason === null) return;
    try { await api(`${base}/cancel`, { reason }); flash("cancelled"); await refresh(); }
    catch (e) { flash(`${e.name}: ${e.message}`, true); }
  };
  $("#btn-continue").onclick = async () => {
    try { await api(`${base}/resume`, {}); flash("resumed"); follow = true; await refresh(); }
    catch (e) { flash(`${e.name}: ${e.message}`, true); }
  };
  $("#btn-fork").onclick = async () => {
    const cp = points[selected];
    try {
      const doc = await api(`${base}/fork`, { super_step: cp.super_step });
      location.href = `/runs/${enc(wf)}/${enc(doc.run_id)}`;
    } catch (e) { flash(`${e.name}: ${e.message}`, true); }
  };
  every(() => (state && state.status === "running" ? 700 : 3000), refresh);
}

// -- workflows -------------------------------------------------------------------------

async function pageWorkflows() {
  const doc = await api("/api/workflows");
  const cards = await Promise.all(doc.workflows.map(async (w) => {
    const input = el("textarea", { rows: 3, class: "answer", text: "{}" });
    const start = async (e) => {
      e.preventDefault();
      try {
        const r = await api(`/api/workflows/${enc(w.id)}/runs`, { input: JSON.parse(input.value) });
        location.href = `/runs/${enc(w.id)}/${enc(r.run_id)}`;
      } catch (err) { flash(`${err.name}: ${err.message}`, true); }
    };
    const box = el("div", { class: "graph" });
    drawGraph(box, w.graph, null);
    const recent = (await api(`/api/runs?workflow_id=${enc(w.id)}&limit=5`)).runs;
    const runs = el("ul", { class: "recent" }, recent.map((r) => el("li", {}, badge(r.status), " ",
      el("a", { href: `/runs/${enc(w.id)}/${enc(r.run_id)}`, text: r.run_id }),
      el("span", { class: "muted", text: ` ${when(r.updated_ms)}` }))));
    return el("section", { class: "card", id: `wf-${w.id}` },
      el("h2", {}, w.id, w.version !== null ? el("span", { class: "muted", text: ` v${w.version}` }) : null,
        w.module ? el("code", { class: "muted module", text: w.module }) : null),
      el("div", { class: "cols" },
        el("div", {}, box, el("details", {}, el("summary", { text: "mermaid" }), el("pre", { text: w.mermaid }))),
        el("div", {},
          el("h3", {}, "Recent runs ", el("a", { href: `/?workflow_id=${enc(w.id)}`, text: "(all)" })),
          recent.length ? runs : el("p", { class: "muted", text: "no runs yet" }),
          el("form", { onsubmit: start }, el("label", {}, "Input (JSON object)", input),
            el("button", { type: "submit", text: "Start a run" })))));
  }));
  $("#workflows").replaceChildren(...(cards.length ? cards : [el("p", { class: "muted", text: "no workflows" })]));
  const target = location.hash && document.getElementById(`wf-${decodeURIComponent(location.hash.slice(1))}`);
  if (target) target.scrollIntoView();
}

// -- workers ------------------------------------------------------------------------------

async function pageWorkers() {
  const body = $("#workers-body");
  const row = (w) => el("tr", { "data-worker": w.worker_id },
    el("td", {}, el("code", { text: w.worker_id })), el("td", { text: w.host }),
    el("td", { class: "num", text: w.pid }), el("td", { text: when(w.started_ms) }),
    el("td", { text: when(w.heartbeat_ms) }), el("td", { class: "num", text: w.runs }),
    el("td", {}, badge(w.alive ? "alive" : "hung")));
  every(2000, async () => {
    const doc = await api("/api/workers");
    body.replaceChildren(...(doc.workers.length ? doc.workers.map(row)
      : [el("tr", {}, el("td", { colspan: 7, class: "muted",
        text: "no workers: runs execute in the serving process (an LMDB or in-memory store), or no worker is running" }))]));
  });
}

// -- schedules ----------------------------------------------------------------------------

function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 90) return `${Math.round(s * 10) / 10} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

async function pageSchedules() {
  const body = $("#schedules-body");
  const remove = async (s) => {
    if (!confirm(`Delete schedule ${s.schedule_id}? Runs it started are kept.`)) return;
    try {
      await api(`/api/schedules/${enc(s.schedule_id)}`, undefined, "DELETE");
      flash(`deleted ${s.schedule_id}`);
      await load();
    } catch (e) { flash(`${e.name}: ${e.message}`, true); }
  };
  const row = (s) => {
    const now = Date.now() / 1000;
    const rule = s.cron !== null ? `cron ${s.cron}` : `every ${span(s.every_s)}`;
    const next = s.next_due === null ? el("span", { class: "error", text: "cannot tell" })
      : el("span", { title: s.next_due_iso }, when(s.next_due * 1000),
        el("span", { class: "muted", text: s.next_due > now ? ` (in ${span(s.next_due - now)})` : " (due now)" }));
    const last = s.last_run_id
      ? el("span", {}, badge(s.last_run_status || "deleted"), " ",
        el("a", { href: `/runs/${enc(s.workflow_id)}/${enc(s.last_run_id)}`, text: s.last_run_id }),
        el("span", { class: "muted", text: ` ${when(s.last_fired * 1000)}` }))
      : el("span", { class: "muted", text: "none yet" });
    return el("tr", { "data-schedule": s.schedule_id },
      el("td", {}, el("code", { text: s.schedule_id }),
        s.last_error ? el("div", { class: "error small", text: s.last_error }) : null),
      el("td", {}, el("a", { href: `/workflows#${enc(s.workflow_id)}`, text: s.workflow_id })),
      el("td", {}, el("code", { text: rule }),
        el("div", { class: "muted small", text: `overlap ${s.overlap} · catch-up ${s.catch_up}` })),
      el("td", { class: "next" }, next, s.armed ? null
        : el("div", { class: "muted small", text: "not fired by this server (its workflow is not registered here, or schedules are off)" })),
      el("td", { class: "last" }, last),
      el("td", { class: "num", text: `${s.fired} / ${s.skipped}` }),
      el("td", {}, el("button", { type: "button", class: "danger", onclick: () => remove(s), text: "Delete" })));
  };
  const load = async () => {
    const doc = await api("/api/schedules");
    body.replaceChildren(...(doc.schedules.length ? doc.schedules.map(row)
      : [el("tr", {}, el("td", { colspan: 7, class: "muted",
        text: "no schedules: add one with rt.schedule(...), atomr schedule add or POST /api/schedules" }))]));
  };
  every(2000, load);
}

const PAGES = { runs: pageRuns, run: pageRun, workflows: pageWorkflows, workers: pageWorkers,
  schedules: pageSchedules };
(PAGES[PAGE] || (async () => {}))().catch((e) => flash(`${e.name}: ${e.message}`, true));
