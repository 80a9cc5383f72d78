// gearworker web app: plain JavaScript, no build step.
// Every job's and photo's state arrives as a whole over server-sent events; render() functions
// are idempotent, so a replayed or repeated event is harmless. Each stream starts with a "hello"
// naming the web app's boot id: a new one means the app restarted, and the page re-syncs.
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

const state = {
  session: newSession(), config: null, photoSeq: 0, functions: [], boot: null,
  jobs: new Map(),          // row id -> latest view, for re-sync after a restart
  uploads: new Map(),       // local key -> photo id once the server has it
  photosShown: 0, photosTotal: 0,
};
const PAGE = 20;

// The SameSite=Strict cookie the app sets with the page; sent back as a header on every change.
function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)gw_csrf=([^;]+)/);
  return m ? m[1] : "";
}

async function post(url, { json, method = "POST" } = {}) {
  const headers = { "x-csrf-token": csrfToken() };
  if (json !== undefined) headers["content-type"] = "application/json";
  return fetch(url, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
}

// ---------------------------------------------------------------- tabs

// The tabs are the links with role=tab in the top bar, each naming its section by data-page: a page
// added to index.html (a tab and a section) is shown, titled and reached by the keys with no change here.
const tabs = () => [...document.querySelectorAll('.tabs [role="tab"]')];

function showPage() {
  const pages = tabs().map((t) => t.dataset.page);
  const page = (location.hash || "").slice(1);
  const known = pages.includes(page) ? page : pages[0];
  for (const section of document.querySelectorAll(".page")) section.hidden = section.dataset.page !== known;
  for (const tab of tabs()) {
    const selected = tab.dataset.page === known;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;  // one tab stop for the tab list: the arrow keys move within it
  }
  const tab = tabs().find((t) => t.dataset.page === known);
  document.title = `${tab ? tab.textContent.trim() : known} · gearworker`;
  // Pages that fetch while they are shown (console.js) start and stop on this.
  document.dispatchEvent(new CustomEvent("gw:page", { detail: known }));
}

// The tab list as WAI-ARIA's tabs pattern has it: Left and Right move to the previous and next tab
// (round the ends), Home and End to the first and last, each shown as it gets the focus.
function setupTabs() {
  window.addEventListener("hashchange", showPage);
  document.querySelector('.tabs[role="tablist"]').addEventListener("keydown", (e) => {
    const all = tabs(), at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const tab = all[(to + all.length) % all.length];
    tab.focus();
    if (location.hash !== tab.hash) location.hash = tab.hash;
  });
  // The skip link jumps to the shown page's heading; the #tab in the address stays as it is.
  $("#skip").addEventListener("click", (e) => {
    e.preventDefault();
    const heading = $(".page:not([hidden]) h1");
    if (heading) heading.focus();
  });
  showPage();
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

// A card's id is the uploading page's key (random per page, kept by the server), so the card made
// when the upload starts is the one later events fill in; photos without a key use their id.
const cardId = (p) => `photo-${p.key || p.id}`;
const cardOf = (photoId) => document.querySelector(`#photo-list .photo[data-photo="${photoId}"]`);

function photoCard(p, { append = false } = {}) {
  let card = document.getElementById(cardId(p));
  if (!card) {
    card = $("#photo-template").content.firstElementChild.cloneNode(true);
    card.id = cardId(p);
    $(".delete", card).addEventListener("click", () => deletePhoto(card));
    $(".retry", card).addEventListener("click", () => retryPhoto(card));
    if (append) $("#photo-list").append(card); else $("#photo-list").prepend(card);
  }
  return card;
}

const PHOTO_STATES = { uploading: "Uploading", queued: "Queued", waiting: "Waiting for a worker",
  resizing: "Resizing", done: "Done", failed: "Failed" };

// Views of a photo or a job come over several connections (the stream, the photo list, an upload's
// answer) and can arrive out of order: a view older than the one shown (a smaller revision) is dropped.
const older = (view, shown) => view.revision !== undefined && shown !== undefined && view.revision < Number(shown);

function renderPhoto(p, options) {
  const card = photoCard(p, options);
  if (older(p, card.dataset.revision)) return;
  if (p.revision !== undefined) card.dataset.revision = String(p.revision);
  card.className = `card photo ${p.state}`;
  card.dataset.state = p.state;
  if (p.id) card.dataset.photo = p.id;
  $(".photo-name", card).textContent = p.name;
  $(".photo-size", card).textContent = p.upload_size || "";
  const badge = $(".photo-state", card);
  badge.className = `badge photo-state ${p.state}`;
  badge.textContent = PHOTO_STATES[p.state] || p.state;
  const percent = p.percent || 0;
  const bar = $(".progress", card);
  bar.value = percent;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `${p.state === "uploading" ? "Upload" : "Resizing"} of ${p.name}`);
  let detail = "";
  if (p.state === "failed") detail = p.error;
  else if (p.state === "resizing") detail = `${percent}% · copy ${p.numerator} of ${p.denominator}`;
  else if (p.state === "queued") detail = "Queued: the job waits until a worker for “resize” picks it up.";
  else if (p.state === "waiting") detail = "Waiting for a worker: no worker has the “resize” function right now.";
  else if (p.state === "uploading") detail = `Sending the photo to the web app… ${percent}%`;
  else if (p.state === "done") detail = `100% · ${p.copies.length} copies · ${(p.format || "").toUpperCase()}`;
  $(".photo-detail", card).textContent = detail;
  // A button that goes away with the state (Retry once the photo is queued again) leaves the focus on its card.
  const show = (button, shown, label) => {
    if (!shown && button === document.activeElement) card.focus();
    button.hidden = !shown;
    button.setAttribute("aria-label", label);
  };
  show($(".retry", card), Boolean(p.id && p.state === "failed"), `Retry ${p.name}`);
  show($(".delete", card), Boolean(p.id && ["done", "failed"].includes(p.state)), `Delete ${p.name}`);
  const copies = $(".copies", card);
  if (p.state === "done" && copies.childElementCount !== p.copies.length) {
    const thumb = thumbnail(p.copies);
    copies.replaceChildren(...p.copies.map((c) => el("figure", { class: "copy" },
      el("a", { class: "copy-img", href: c.url, target: "_blank", rel: "noopener" },
        el("img", { ...thumb, alt: `${p.name}, ${c.width}×${c.height}` })),
      el("figcaption", { class: "copy-meta" },
        el("span", { class: "dim", text: `${c.width} × ${c.height} px` }),
        el("span", { class: "muted", text: `${c.format.toUpperCase()} · ${c.human_bytes}` }),
        el("a", { href: c.download, download: c.filename, text: "Download" })))));
  }
}

// Every thumbnail of a photo is the same picture at THUMB's size: the browser picks from the copies the
// smallest that is sharp enough at that size (srcset/sizes), the 256 px one on most screens, and loads
// it once for all of them, lazily. Width and height are known before it loads: nothing moves.
const THUMB = { width: 170, height: 120 };

function thumbnail(copies) {
  const largest = copies.reduce((a, c) => (c.width * c.height > a.width * a.height ? c : a));
  const smallest = copies.reduce((a, c) => (c.width < a.width ? c : a));
  const scale = Math.min(THUMB.width / largest.width, THUMB.height / largest.height, 1);
  const width = Math.max(1, Math.round(largest.width * scale)), height = Math.max(1, Math.round(largest.height * scale));
  // Attribute order matters: loading is set before the sources, or the image would start loading at once.
  return { loading: "lazy", decoding: "async", width: String(width), height: String(height), sizes: `${width}px`,
    srcset: copies.map((c) => `${c.url} ${c.width}w`).join(", "), src: smallest.url };
}

async function deletePhoto(card) {
  const id = card.dataset.photo;
  const response = await post(`/api/photos/${id}`, { method: "DELETE" });
  if (response.ok || response.status === 404) removePhoto(id);
  else $(".photo-detail", card).textContent = await readError(response);
}

// A failed photo is resized again from its original, which the app kept on disk.
async function retryPhoto(card) {
  const button = $(".retry", card);
  if (button.getAttribute("aria-disabled") === "true") return;
  button.setAttribute("aria-disabled", "true");
  try {
    const response = await post(`/api/photos/${card.dataset.photo}/retry`);
    if (response.ok) renderPhoto(await response.json());
    else $(".photo-detail", card).textContent = await readError(response);
  } catch (e) {
    $(".photo-detail", card).textContent = "The web app could not be reached (is it still running?).";
  } finally {
    button.removeAttribute("aria-disabled");
  }
}

function removePhoto(id) {
  const card = cardOf(id);
  if (!card) return;
  // Whoever had the focus in the card (its Delete button) keeps it nearby: the next photo, else the
  // one before, else the drop zone; never the page itself.
  const hadFocus = card.contains(document.activeElement);
  const next = card.nextElementSibling || card.previousElementSibling;
  card.remove();
  state.photosTotal = Math.max(0, state.photosTotal - 1);
  photoCount();
  if (hadFocus) {
    const button = next && $(".delete", next);
    if (button && !button.hidden) button.focus();
    else if (next) next.focus();
    else $("#drop").focus();
  }
}

function photoCount() {
  const shown = document.querySelectorAll("#photo-list .photo[data-photo]").length;
  $("#photo-count").textContent = state.photosTotal ? `${shown} of ${state.photosTotal} photos shown` : "";
  $("#more-photos").hidden = shown >= state.photosTotal;
}

// The stored photos, newest first; `reset` replaces the list (after a restart of the web app).
async function loadPhotos({ reset = false } = {}) {
  const offset = reset ? 0 : document.querySelectorAll("#photo-list .photo[data-photo]").length;
  const response = await fetch(`/api/photos?offset=${offset}&limit=${reset ? Math.max(PAGE, offset) : PAGE}`);
  if (!response.ok) return;
  const body = await response.json();
  if (reset) {
    const keep = new Set(body.photos.map((p) => p.id));
    for (const card of document.querySelectorAll("#photo-list .photo[data-photo]")) if (!keep.has(card.dataset.photo)) card.remove();
  }
  state.photosTotal = body.total;
  for (const p of body.photos) renderPhoto(p, { append: !document.getElementById(cardId(p)) });
  if (reset) {  // newest first, as listed
    const list = $("#photo-list");
    for (const p of body.photos) { const c = document.getElementById(cardId(p)); if (c) list.append(c); }
  }
  photoCount();
}

function uploadPhoto(file) {
  const key = `${state.session.slice(0, 8)}-${++state.photoSeq}`;
  state.uploads.set(key, null);
  const local = { key, name: file.name, state: "uploading", percent: 0, upload_size: humanSize(file.size), copies: [] };
  renderPhoto(local);
  const cfg = state.config;
  const fail = (error) => renderPhoto({ ...local, state: "failed", error });
  if (cfg && file.size > cfg.max_upload_bytes) return fail(`That file is too big: photos may be up to ${cfg.max_upload}.`);
  if (file.type && !file.type.startsWith("image/")) return fail(`“${file.name}” is not an image we can read (we take ${cfg ? cfg.accepted : "images"}).`);
  const body = new FormData();
  body.append("key", key);
  body.append("photo", file, file.name);
  // XHR, not fetch: only XHR reports upload progress.
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/photos?session=${state.session}&format=${encodeURIComponent($("#format").value)}`);
  xhr.setRequestHeader("x-csrf-token", csrfToken());
  xhr.upload.addEventListener("progress", (e) => {
    if (!e.lengthComputable || document.getElementById(cardId(local))?.dataset.photo) return;  // the server has it
    renderPhoto({ ...local, percent: Math.min(99, Math.floor((100 * e.loaded) / e.total)) });
  });
  xhr.addEventListener("load", () => {
    let answer = {};
    try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status >= 400) return fail(answer.error || `The web app answered ${xhr.status}.`);
    state.uploads.set(key, answer.id);
    renderPhoto(answer);  // dropped if the stream already showed a later state
    state.photosTotal += 1;
    photoCount();
  });
  xhr.addEventListener("error", () => fail("The upload did not reach the web app (is it still running?)."));
  xhr.send(body);
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
  drop.addEventListener("click", () => input.click());  // a button: Enter and Space click it
  // A photo dropped next to the drop zone must not make the browser navigate away.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("#more-photos").addEventListener("click", () => loadPhotos());
}

// ---------------------------------------------------------------- jobs

const JOB_STATES = { submitted: "Submitted", waiting: "Waiting for a worker", queued: "Queued", running: "Running",
  done: "Done", failed: "Failed", finished: "Finished", lost: "Lost", unknown: "Unknown", cancelled: "Cancelled" };
const FINAL = ["done", "failed", "finished", "lost", "unknown", "cancelled"];
const NOTES = {
  waiting: "No worker has this function right now: the job waits until one registers.",
  finished: "The server no longer knows this job: it has ended.",
};

// A row's cells are made once and then changed in place, so an element in it (the Cancel button) stays
// the same element across progress events and keeps the keyboard focus.
function jobRow(id) {
  let row = document.getElementById(`job-${id}`);
  if (row) return row;
  const cell = (name, cls = "") => el("td", { class: `${cls} c-${name}`.trim(), "data-label": JOB_LABELS[name] });
  row = el("tr", { id: `job-${id}`, tabindex: "-1" },
    cell("id", "muted nowrap id"), cell("fn", "fn"), cell("mode", "mode"), cell("state"), cell("progress"),
    cell("out", "out"), cell("time", "num muted nowrap"), cell("actions", "actions-cell"));
  $("#job-rows").prepend(row);
  return row;
}
const JOB_LABELS = { id: "#", fn: "Function", mode: "Mode", state: "State", progress: "Progress", out: "Result",
  time: "Time", actions: "Actions" };

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function renderJob(j) {
  if (older(j, state.jobs.get(j.id)?.revision)) return;
  state.jobs.set(j.id, j);
  $("#job-rows .empty")?.remove();
  const row = jobRow(j.id);
  const cell = (name) => $(`.c-${name}`, row);
  row.dataset.state = j.state;
  setText(cell("id"), j.id);
  setText(cell("fn"), j.function);
  setText(cell("mode"), `${j.background ? "background" : "foreground"}${j.priority !== "normal" ? `, ${j.priority}` : ""}`);
  const badge = cell("state").firstElementChild || cell("state").appendChild(el("span"));
  badge.className = `badge ${j.state}`;
  // A background job whose failure the workers' store recorded (Gearman itself keeps no outcome).
  setText(badge, j.state === "failed" && j.record ? "Failed (recorded)" : JOB_STATES[j.state] || j.state);

  const progress = cell("progress");
  if (j.denominator && !FINAL.includes(j.state)) {
    const pct = Math.round((100 * j.numerator) / j.denominator);
    let bar = $("progress", progress);
    if (!bar) {
      bar = el("progress", { class: "mini-progress", max: "100", "aria-label": `Progress of job ${j.id}` });
      progress.replaceChildren(bar, document.createTextNode(""));
    }
    bar.value = pct;
    progress.lastChild.textContent = `${j.numerator}/${j.denominator}`;
  } else {
    setText(progress, ["done", "finished"].includes(j.state) ? "—" : "");
  }

  const out = [];
  if (j.error) out.push(el("span", { class: "result error", text: j.error }));
  else if (j.result) out.push(el("span", { class: "result", text: j.result.binary ? `${j.result.bytes} bytes of binary data` : j.result.text || "(empty result)" }));
  else if (j.handle) out.push(el("span", { class: "result", text: j.handle }));
  if (NOTES[j.state] && !j.error) out.push(el("span", { class: "muted note", text: NOTES[j.state] }));
  if (j.record) {
    out.push(el("button", { type: "button", class: "ghost small open-record", "data-record": j.record.id,
      text: "Open its record", "aria-label": `Open the failed-job record of job ${j.id}` }));
  }
  for (const m of j.messages || []) out.push(el("div", { class: "muted warning", text: `warning: ${m}` }));
  // A long result scrolls within its cell: make it a tab stop, so the keyboard can scroll it too.
  for (const r of out) {
    if (r.classList.contains("result") && (r.textContent.length > 400 || r.textContent.split("\n").length > 6)) {
      r.tabIndex = 0;
      r.setAttribute("role", "region");
      r.setAttribute("aria-label", `Result of job ${j.id}`);
    }
  }
  const outCell = cell("out");
  if (outCell.innerHTML !== out.map((n) => n.outerHTML).join("")) outCell.replaceChildren(...out);

  setText(cell("time"), j.duration != null ? `${j.duration.toFixed(3)} s` : "");

  const actions = cell("actions");
  let cancel = $(".cancel", actions);
  if (!j.background && !FINAL.includes(j.state)) {
    if (!cancel) {
      cancel = el("button", { type: "button", class: "ghost small cancel", text: "Cancel", "aria-label": `Cancel job ${j.id}` });
      cancel.addEventListener("click", () => cancelJob(j.id, cancel));
      actions.append(cancel);
    }
  } else if (cancel) {
    const hadFocus = cancel === document.activeElement;
    cancel.remove();
    if (hadFocus) row.focus();  // the row (now saying "Cancelled") keeps the focus, not the page
  }
}

async function cancelJob(id, button) {
  // aria-disabled, not disabled: a disabled button drops the keyboard focus to the page.
  if (button.getAttribute("aria-disabled") === "true") return;
  button.setAttribute("aria-disabled", "true");
  const response = await post(`/api/jobs/${encodeURIComponent(id)}/cancel?session=${state.session}`);
  if (!response.ok) { button.removeAttribute("aria-disabled"); $("#form-error").textContent = await readError(response); }
}

// After a restart of the web app: background jobs are watched again; foreground ones are marked lost.
// After events were dropped while the page was away: each open row comes back as it is now.
async function resumeJobs() {
  const open = [...state.jobs.values()].filter((j) => !FINAL.includes(j.state));
  if (!open.length) return;
  const response = await post(`/api/jobs/resume?session=${state.session}`, { json: { jobs: open } });
  if (response.ok) (await response.json()).jobs.forEach(renderJob);
}

function setupJobs() {
  const form = $("#job-form");
  const submit = $("#submit");
  // While a submission is on its way the form is busy: Submit says so (aria-disabled) and ignores
  // presses, but stays focusable; a disabled button would drop the keyboard focus to the page.
  const busy = (on) => {
    form.setAttribute("aria-busy", String(on));
    submit.setAttribute("aria-disabled", String(on));
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    $("#form-error").textContent = "";
    const data = {
      function: form.function.value,
      payload: form.payload.value,
      priority: form.priority.value,
      background: form.mode.value === "background",
      copies: Number(form.copies.value || 1),
    };
    if (!data.function) { $("#form-error").textContent = "Choose a function to run."; return; }
    busy(true);
    try {
      const response = await post(`/api/jobs?session=${state.session}`, { json: data });
      if (!response.ok) { $("#form-error").textContent = await readError(response); return; }
      const body = await response.json();
      body.jobs.forEach(renderJob);  // rows the stream already moved on are left as they are
    } catch (err) {
      $("#form-error").textContent = "The web app could not be reached (is it still running?).";
    } finally {
      busy(false);
    }
  });
  // The record of a failed background job opens on the Failed page (console.js).
  $("#job-rows").addEventListener("click", (e) => {
    const button = e.target.closest(".open-record");
    if (button && typeof openFailedRecord === "function") openFailedRecord(button.dataset.record);
  });
  $("#clear-jobs").addEventListener("click", () => {
    state.jobs.clear();
    $("#job-rows").replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8", text: "No jobs yet." })));
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
  setText($("#conn-text"), `${up} of ${data.servers.length} job server${data.servers.length === 1 ? "" : "s"} up`);
  const down = data.servers.filter((s) => !s.ok);
  banner(down.length === data.servers.length ? down[0].error.replace(/ at .*/, ` at ${down.map((s) => s.address).join(", ")}.`) : "");
  const time = new Date(data.time * 1000).toLocaleTimeString();
  const list = $("#server-list");
  $(".loading", list)?.remove();
  // A server's card is rebuilt only when its table changed, and the keyboard focus (its scrolling
  // table) is put back; the time of the last refresh is changed in place every second.
  for (const s of data.servers) {
    const key = JSON.stringify([s.ok, s.error, s.functions]);
    let card = [...list.querySelectorAll("section.server")].find((c) => c.dataset.address === s.address);
    if (!card || card.dataset.key !== key) {
      const fresh = serverCard(s);
      fresh.dataset.key = key;
      const refocus = card && card.contains(document.activeElement);
      if (card) card.replaceWith(fresh); else list.append(fresh);
      card = fresh;
      if (refocus) ($(".table-scroll", card) || card).focus();
    }
    setText($(".updated", card), `updated ${time}`);
  }
}

function serverCard(s) {
  const head = el("div", { class: "server-head" },
    el("h2", { text: s.address }),
    el("span", { class: `badge ${s.ok ? "up" : "down"}`, text: s.ok ? "up" : "unreachable" }),
    el("span", { class: "muted updated" }));
  if (!s.ok) return el("section", { class: "card server", "data-address": s.address, tabindex: "-1" }, head, el("div", { class: "server-error", text: s.error }));
  // gearmand's "queued" counts the running jobs too: what waits for a worker is the difference.
  const rows = s.functions.map((f) => el("tr", { "data-function": f.function },
    el("td", { class: "fn", text: f.function }),
    el("td", { class: "num", text: String(Math.max(0, f.queued - f.running)) }),
    el("td", { class: "num", text: String(f.running) }),
    el("td", { class: "num", text: String(f.workers) }),
    el("td", {}, el("span", { class: `badge ${f.workers ? "up" : "idle"}`, text: f.workers ? "served" : "no worker" }))));
  if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "5", text: "This server knows no functions yet." })));
  const table = el("table", { class: "table servers-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Function" }), el("th", { class: "num", text: "Waiting" }),
      el("th", { class: "num", text: "Running" }), el("th", { class: "num", text: "Workers" }),
      el("th", {}, el("span", { class: "sr-only", text: "Status" })))),
    el("tbody", {}, ...rows));
  // A region that may scroll sideways on a phone: a tab stop, so the keyboard can scroll it too.
  return el("section", { class: "card server", "data-address": s.address, tabindex: "-1" }, head,
    el("div", { class: "table-scroll", role: "region", "aria-label": `Functions on ${s.address}`, tabindex: "0" }, table));
}

// ---------------------------------------------------------------- start

// One stream for everything, and none while the tab is hidden: a browser gives a host only six
// HTTP/1.1 connections, and each open stream holds one. Event ids carry the boot id, so a stream
// opened again asks for what it missed (?last=) and the server replays it, within one boot.
let events = null;
let lastEventId = "";
let retryTimer = null;

async function hello(data) {
  const first = state.boot === null;
  if (data.resync && state.boot === data.boot) {
    // Same app, but events this page never got are gone (it was away too long): fetch everything again.
    await loadPhotos({ reset: true });
    await resumeJobs();
    return;
  }
  if (state.boot === data.boot) return;
  state.boot = data.boot;
  document.body.dataset.boot = data.boot;
  // First contact: the list of stored photos. A new boot: the web app restarted; fetch everything again.
  await loadPhotos({ reset: !first });
  if (!first) await resumeJobs();
  document.body.dataset.synced = data.boot;
}

function listen() {
  if (events) return;
  clearTimeout(retryTimer);
  events = new EventSource(`/api/events?session=${state.session}&last=${encodeURIComponent(lastEventId)}`);
  const on = (type, render) => events.addEventListener(type, (e) => {
    if (e.lastEventId) lastEventId = e.lastEventId;
    render(JSON.parse(e.data));
  });
  on("hello", hello);
  on("photo", renderPhoto);
  on("photo-deleted", (d) => removePhoto(d.id));
  on("job", renderJob);
  on("servers", renderServers);
  events.addEventListener("error", () => {
    if (!events || events.readyState === EventSource.OPEN) return;
    $("#conn").className = "conn bad";
    $("#conn-text").textContent = "Web app unreachable";
    if (events.readyState === EventSource.CLOSED) {  // the browser gave up (an HTTP error): try again ourselves
      events = null;
      retryTimer = setTimeout(listen, 1000);
    }
  });
}

function pause() {
  if (events) events.close();
  events = null;
}

document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? pause() : listen()));

async function start() {
  setupTabs();
  setupDrop();
  setupJobs();
  if (document.visibilityState !== "hidden") listen();  // a tab opened in the background waits until shown
  try {
    const response = await fetch("/api/config");
    state.config = await response.json();
    setText($("#max-upload"), state.config.max_upload);
    setText($("#accepted"), state.config.accepted);
    if (state.config.login) {
      const out = $("#logout");
      out.hidden = false;
      out.addEventListener("click", async () => { await post("/api/logout"); location.href = "/login"; });
    }
  } catch (e) {
    banner("The web app could not be reached (is it still running?).");
  }
}

document.addEventListener("DOMContentLoaded", start);
