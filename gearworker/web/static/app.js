// gearworker web app: plain JavaScript, no build step.
// Every job's state arrives as a whole over server-sent events; render() functions
// are idempotent, so a replayed or repeated event is harmless.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};

function newSession() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const state = { session: newSession(), config: null, photoSeq: 0, functions: [] };

// ---------------------------------------------------------------- tabs

function showPage() {
  const page = (location.hash || "#photos").slice(1);
  const known = ["photos", "jobs", "servers"].includes(page) ? page : "photos";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.dataset.page !== known;
  for (const tab of document.querySelectorAll(".tabs a")) tab.setAttribute("aria-selected", String(tab.dataset.page === known));
  document.title = `${known[0].toUpperCase()}${known.slice(1)} · gearworker`;
}

function banner(message) {
  const b = $("#banner");
  b.textContent = message || "";
  b.hidden = !message;
}

async function readError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `The web app answered ${response.status} ${response.statusText}.`;
}

// ---------------------------------------------------------------- photos

function photoCard(key) {
  let card = document.getElementById(`photo-${key}`);
  if (!card) {
    card = $("#photo-template").content.firstElementChild.cloneNode(true);
    card.id = `photo-${key}`;
    $("#photo-list").prepend(card);
  }
  return card;
}

const PHOTO_STATES = { uploading: "Uploading", queued: "Waiting for a worker", resizing: "Resizing", done: "Done", failed: "Failed" };

function renderPhoto(p) {
  const card = photoCard(p.key || p.id);
  card.className = `card photo ${p.state}`;
  card.dataset.state = p.state;
  $(".photo-name", card).textContent = p.name;
  $(".photo-size", card).textContent = p.upload_size || "";
  const badge = $(".photo-state", card);
  badge.className = `badge photo-state ${p.state}`;
  badge.textContent = PHOTO_STATES[p.state] || p.state;
  const percent = p.percent || 0;
  const bar = $(".progress", card);
  bar.setAttribute("aria-valuenow", String(percent));
  $(".progress-fill", card).style.width = `${percent}%`;
  let detail = "";
  if (p.state === "failed") detail = p.error;
  else if (p.state === "resizing") detail = `${percent}% · copy ${p.numerator} of ${p.denominator}`;
  else if (p.state === "queued") detail = "Queued: the job waits until a worker for “resize” picks it up.";
  else if (p.state === "uploading") detail = "Sending the photo to the web app…";
  else if (p.state === "done") detail = `100% · ${p.copies.length} copies`;
  $(".photo-detail", card).textContent = detail;
  const copies = $(".copies", card);
  if (p.state === "done" && copies.childElementCount !== p.copies.length) {
    copies.replaceChildren(...p.copies.map((c) => el("figure", { class: "copy" },
      el("a", { class: "copy-img", href: c.url, target: "_blank", rel: "noopener" },
        el("img", { src: c.url, alt: `${p.name}, ${c.width}×${c.height}`, loading: "lazy" })),
      el("figcaption", { class: "copy-meta" },
        el("span", { class: "dim", text: `${c.width} × ${c.height} px` }),
        el("span", { class: "muted", text: `${c.format.toUpperCase()} · ${c.human_bytes}` }),
        el("a", { href: c.download, download: c.filename, text: "Download" })))));
  }
}

async function uploadPhoto(file) {
  const key = `p${++state.photoSeq}`;
  const local = { key, name: file.name, state: "uploading", percent: 0, upload_size: humanSize(file.size), copies: [] };
  renderPhoto(local);
  const cfg = state.config;
  const fail = (error) => renderPhoto({ ...local, state: "failed", error });
  if (cfg && file.size > cfg.max_upload_bytes) return fail(`That file is too big: photos may be up to ${cfg.max_upload}.`);
  if (file.type && !file.type.startsWith("image/")) return fail(`“${file.name}” is not an image we can read (we take ${cfg ? cfg.accepted : "images"}).`);
  const body = new FormData();
  body.append("key", key);
  body.append("photo", file, file.name);
  try {
    const response = await fetch(`/api/photos?session=${state.session}`, { method: "POST", body });
    if (!response.ok) return fail(await readError(response));
  } catch (e) {
    fail("The upload did not reach the web app (is it still running?).");
  }
}

function humanSize(n) {
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
}

function setupDrop() {
  const drop = $("#drop"), input = $("#file-input");
  input.addEventListener("change", () => { [...input.files].forEach(uploadPhoto); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); [...e.dataTransfer.files].forEach(uploadPhoto); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  // A photo dropped next to the drop zone must not make the browser navigate away.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// ---------------------------------------------------------------- jobs

const JOB_STATES = { submitted: "Submitted", queued: "Queued", running: "Running", done: "Done", failed: "Failed", finished: "Finished" };

function renderJob(j) {
  const tbody = $("#job-rows");
  $(".empty", tbody)?.remove();
  let row = document.getElementById(`job-${j.id}`);
  if (!row) {
    row = el("tr", { id: `job-${j.id}` });
    tbody.prepend(row);
  }
  row.dataset.state = j.state;
  const progress = el("td");
  if (j.denominator && j.state !== "finished") {
    const pct = Math.round((100 * j.numerator) / j.denominator);
    const bar = el("span", { class: "mini-progress" }, el("div"));
    bar.firstChild.style.width = `${pct}%`;
    progress.append(bar, `${j.numerator}/${j.denominator}`);
  } else {
    progress.append(el("span", { class: "muted", text: ["done", "finished"].includes(j.state) ? "—" : "" }));
  }
  const out = el("td");
  if (j.error) out.append(el("span", { class: "result error", text: j.error }));
  else if (j.result) out.append(el("span", { class: "result", text: j.result.binary ? `${j.result.bytes} bytes of binary data` : j.result.text || "(empty result)" }));
  else if (j.handle) out.append(el("span", { class: "result", text: j.handle }),
    el("span", { class: "muted", text: j.state === "finished" ? "The server no longer knows this job: it has ended." : "" }));
  for (const m of j.messages || []) out.append(el("div", { class: "muted warning", text: `warning: ${m}` }));
  row.replaceChildren(
    el("td", { class: "muted nowrap", text: j.id }),
    el("td", { class: "fn", text: j.function }),
    el("td", { text: `${j.background ? "background" : "foreground"}${j.priority !== "normal" ? `, ${j.priority}` : ""}` }),
    el("td", {}, el("span", { class: `badge ${j.state}`, text: JOB_STATES[j.state] || j.state })),
    progress,
    out,
    el("td", { class: "num muted nowrap", text: j.duration != null ? `${j.duration.toFixed(3)} s` : "" }));
}

function setupJobs() {
  const form = $("#job-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#form-error").textContent = "";
    const data = {
      function: form.function.value,
      payload: form.payload.value,
      priority: form.priority.value,
      background: form.mode.value === "background",
      copies: Number(form.copies.value || 1),
    };
    if (!data.function) { $("#form-error").textContent = "Choose a function to run."; return; }
    $("#submit").disabled = true;
    try {
      const response = await fetch(`/api/jobs?session=${state.session}`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(data) });
      if (!response.ok) { $("#form-error").textContent = await readError(response); return; }
      const body = await response.json();
      // The live stream may already have delivered later states: only add rows not seen yet.
      body.jobs.filter((j) => !document.getElementById(`job-${j.id}`)).forEach(renderJob);
    } catch (err) {
      $("#form-error").textContent = "The web app could not be reached (is it still running?).";
    } finally {
      $("#submit").disabled = false;
    }
  });
  $("#clear-jobs").addEventListener("click", () => {
    $("#job-rows").replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "7", text: "No jobs yet." })));
  });
}

function updateFunctions(functions) {
  if (functions.join("\n") === state.functions.join("\n")) return;
  state.functions = functions;
  const select = $("#function");
  const chosen = select.value;
  const options = functions.map((f) => el("option", { value: f, text: f }));
  if (!functions.length) options.push(el("option", { value: "", text: "No functions known yet" }));
  select.replaceChildren(...options);
  if (functions.includes(chosen)) select.value = chosen;
}

// ---------------------------------------------------------------- servers

function renderServers(data) {
  updateFunctions(data.functions);
  const up = data.servers.filter((s) => s.ok).length;
  const conn = $("#conn");
  conn.className = `conn ${up === data.servers.length ? "ok" : "bad"}`;
  $("#conn-text").textContent = `${up} of ${data.servers.length} job server${data.servers.length === 1 ? "" : "s"} up`;
  const down = data.servers.filter((s) => !s.ok);
  banner(down.length === data.servers.length ? down[0].error.replace(/ at .*/, ` at ${down.map((s) => s.address).join(", ")}.`) : "");
  const time = new Date(data.time * 1000).toLocaleTimeString();
  $("#server-list").replaceChildren(...data.servers.map((s) => {
    const head = el("div", { class: "server-head" },
      el("h2", { text: s.address }),
      el("span", { class: `badge ${s.ok ? "up" : "down"}`, text: s.ok ? "up" : "unreachable" }),
      el("span", { class: "muted", text: `updated ${time}` }));
    if (!s.ok) return el("section", { class: "card server", "data-address": s.address }, head, el("div", { class: "server-error", text: s.error }));
    const rows = s.functions.map((f) => el("tr", { "data-function": f.function },
      el("td", { class: "fn", text: f.function }),
      el("td", { class: "num", text: String(f.queued) }),
      el("td", { class: "num", text: String(f.running) }),
      el("td", { class: "num", text: String(f.workers) }),
      el("td", {}, el("span", { class: `badge ${f.workers ? "up" : "idle"}`, text: f.workers ? "served" : "no worker" }))));
    if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "5", text: "This server knows no functions yet." })));
    const table = el("table", { class: "table" },
      el("thead", {}, el("tr", {}, el("th", { text: "Function" }), el("th", { class: "num", text: "Queued" }),
        el("th", { class: "num", text: "Running" }), el("th", { class: "num", text: "Workers" }), el("th", { text: "" }))),
      el("tbody", {}, ...rows));
    return el("section", { class: "card server", "data-address": s.address }, head, table);
  }));
}

// ---------------------------------------------------------------- start

// One stream for everything, and none while the tab is hidden: a browser gives a host only six
// HTTP/1.1 connections, and each open stream holds one. Events are numbered, so a stream opened
// again asks for what it missed (?last=) and the server replays it.
let events = null;
let lastEventId = 0;

function listen() {
  if (events) return;
  events = new EventSource(`/api/events?session=${state.session}&last=${lastEventId}`);
  const on = (type, render) => events.addEventListener(type, (e) => {
    if (e.lastEventId) lastEventId = Math.max(lastEventId, Number(e.lastEventId));
    render(JSON.parse(e.data));
  });
  on("photo", renderPhoto);
  on("job", renderJob);
  on("servers", renderServers);
  events.addEventListener("error", () => {
    if (events && events.readyState !== EventSource.OPEN) {
      $("#conn").className = "conn bad";
      $("#conn-text").textContent = "Web app unreachable";
    }
  });
}

function pause() {
  if (events) events.close();
  events = null;
}

document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? pause() : listen()));

async function start() {
  window.addEventListener("hashchange", showPage);
  showPage();
  setupDrop();
  setupJobs();
  if (document.visibilityState !== "hidden") listen();  // a tab opened in the background waits until shown
  try {
    const response = await fetch("/api/config");
    state.config = await response.json();
    $("#max-upload").textContent = state.config.max_upload;
    $("#accepted").textContent = state.config.accepted;
  } catch (e) {
    banner("The web app could not be reached (is it still running?).");
  }
}

document.addEventListener("DOMContentLoaded", start);
