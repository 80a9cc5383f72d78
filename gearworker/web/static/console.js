// The operator console's pages: Failed, Queues and Workers, over the JSON API of console.py.
// Loaded after app.js, whose helpers it uses ($, el, post, readError, setText, state). Each page fetches
// only while it is shown and the browser tab is visible (pollers below), and changes its rows in place,
// so a focused control keeps the focus across refreshes.
"use strict";

const fmt = (n) => (n == null ? "—" : Number(n).toLocaleString());
const plural = (n, one, many = `${one}s`) => `${fmt(n)} ${n === 1 ? one : many}`;
const pad2 = (n) => String(n).padStart(2, "0");

function localTime(ts) {
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function duration(s) {
  if (s == null) return "—";
  if (s < 0.01) return `${(s * 1000).toFixed(1)} ms`;
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

const perSecond = (r) => (r == null ? "—" : r.toFixed(r < 10 ? 2 : 1));

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(await readError(response));
  return response.json();
}

// The shown page's heading: where the focus goes when what had it went away.
const pageHeading = () => $(".page:not([hidden]) h1");

function focusOr(target, fallback) {
  const usable = (n) => n && n.isConnected && !n.hidden && n.offsetParent !== null;
  if (usable(target)) target.focus();
  else if (usable(fallback)) fallback.focus();
  else pageHeading()?.focus();
}

// ---------------------------------------------------------------- pollers

// page -> { every (ms), run, on, gen, timer }: run() now and every `every` ms while that page is shown.
const pollers = new Map();

function poller(page, every, run) {
  pollers.set(page, { every, run, on: false, gen: 0, timer: null });
}

function updatePollers() {
  const shown = $(".page:not([hidden])")?.dataset.page;
  const visible = document.visibilityState !== "hidden";
  for (const [page, p] of pollers) {
    const on = visible && page === shown;
    if (on === p.on) continue;
    p.on = on;
    p.gen += 1;
    clearTimeout(p.timer);
    if (!on) continue;
    const gen = p.gen;
    const tick = async () => {
      try { await p.run(); } catch (e) { /* shown on the page by run(); try again at the next tick */ }
      if (p.gen === gen) p.timer = setTimeout(tick, typeof p.every === "function" ? p.every() : p.every);
    };
    tick();
  }
}

document.addEventListener("gw:page", updatePollers);
document.addEventListener("visibilitychange", updatePollers);

// What the app is configured with (GET /api/console), fetched once.
let consoleInfo = null;
async function configured() {
  if (!consoleInfo) consoleInfo = await getJSON("/api/console");
  return consoleInfo;
}

// ---------------------------------------------------------------- dialogs

// Tab and Shift+Tab go round within an open dialog (a modal one makes the page inert, but the browser
// would otherwise let the focus leave for its own toolbar, then come back to the top of the page).
function keepFocusIn(dialog) {
  dialog.addEventListener("keydown", (e) => {
    if (e.key !== "Tab") return;
    const stops = [...dialog.querySelectorAll('button, a[href], input, select, textarea, [tabindex]:not([tabindex="-1"])')]
      .filter((n) => !n.hidden && n.offsetParent !== null);
    if (!stops.length) return;
    const first = stops[0], last = stops[stops.length - 1];
    if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
    else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
  });
}

// A modal <dialog> asking to confirm; resolves true or false. The focus starts on Cancel when the action
// deletes, on the action otherwise, and goes back where it was when the dialog closes.
function confirmAction({ title, text, ok, danger = false }) {
  const dialog = $("#confirm"), yes = $("#confirm-ok"), no = $("#confirm-cancel");
  const opener = document.activeElement;
  setText($("#confirm-title"), title);
  setText($("#confirm-text"), text);
  setText(yes, ok);
  yes.classList.toggle("danger", danger);
  return new Promise((resolve) => {
    let answer = false;
    const end = () => {
      yes.removeEventListener("click", accept);
      no.removeEventListener("click", refuse);
      dialog.removeEventListener("close", end);
      focusOr(opener);
      resolve(answer);
    };
    const accept = () => { answer = true; dialog.close(); };
    const refuse = () => dialog.close();
    yes.addEventListener("click", accept);
    no.addEventListener("click", refuse);
    dialog.addEventListener("close", end);  // Escape closes it too: a refusal
    dialog.showModal();
    (danger ? no : yes).focus();
  });
}

// ---------------------------------------------------------------- failed jobs

const FAILED_PAGE = 50;
const failed = {
  filter: {},            // function, q, since, until: as the API takes them
  cursors: [null],       // the `before` of each page seen, the first page's is null
  page: 0,
  next: null,
  total: 0,
  records: new Map(),    // id -> record on the shown page
  selected: new Map(),   // id -> record, across pages, until the filter changes or an action ran
  seq: 0,                // the newest request: older answers are dropped
  configured: null,
};

const recordName = (r) => r.unique || r.handle || `record ${r.id}`;

function filterQuery(extra = {}) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...failed.filter, ...extra })) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  return params.toString();
}

function describeFilter(f) {
  const parts = [];
  if (f.function) parts.push(`function “${f.function}”`);
  if (f.q) parts.push(`text “${f.q}”`);
  if (f.since) parts.push(`from ${localTime(Number(f.since))}`);
  if (f.until) parts.push(`before ${localTime(Number(f.until))}`);
  return parts.join(", ");
}

function readFilter() {
  const form = $("#failed-filter");
  const moment = (input) => {
    if (!input.value) return undefined;
    const at = new Date(input.value).getTime();  // a datetime-local value is the browser's local time
    return Number.isNaN(at) ? undefined : String(at / 1000);
  };
  return {
    function: form.function.value.trim() || undefined,
    q: form.q.value.trim() || undefined,
    since: moment(form.since),
    until: moment(form.until),
  };
}

async function loadFailed({ page = failed.page } = {}) {
  const seq = ++failed.seq;
  const before = failed.cursors[page];
  let body;
  try {
    body = await getJSON(`/api/failed?${filterQuery({ before, limit: FAILED_PAGE })}`);
  } catch (e) {
    if (seq === failed.seq) setText($("#failed-error"), e.message);
    throw e;
  }
  if (seq !== failed.seq) return;  // a newer request (another page, another filter) went out meanwhile
  setText($("#failed-error"), "");
  failed.configured = body.configured;
  $("#failed-none").hidden = body.configured;
  for (const part of ["#failed-filter", ".failed-bar", "#page-failed .table-card", "#page-failed .pager"]) {
    $(part).hidden = !body.configured;
  }
  if (!body.configured) return;
  if (!body.records.length && page > 0) {  // the page emptied (records retried or deleted): the newest
    failed.cursors = [null];
    failed.page = 0;
    return loadFailed();
  }
  failed.page = page;
  failed.next = body.next;
  failed.cursors[page + 1] = body.next;
  failed.total = body.total;
  failed.records = new Map(body.records.map((r) => [r.id, r]));
  renderFailedRows(body.records);
  renderFailedBar();
  const described = describeFilter(failed.filter);
  const summary = `${plural(body.total, "failed job")}${described ? ` ${body.total === 1 ? "matches" : "match"} ${described}` : ""}`;
  setText($("#failed-summary"), summary);
  const first = page * FAILED_PAGE;
  setText($("#failed-page"), body.records.length ? `${fmt(first + 1)}–${fmt(first + body.records.length)} of ${fmt(body.total)}` : "");
}

// The outcome of an action, above the table (a status: screen readers say it). The summary (how many
// match) and the page indicator are statuses too, so a new filter or page is said as well.
function say(text) {
  const box = $("#failed-message");
  box.hidden = !text;
  box.textContent = text;
}

function failedRow(r) {
  let row = document.getElementById(`failed-${r.id}`);
  if (!row) {
    const name = recordName(r);
    const button = (action, text, cls = "") => el("button", { type: "button", class: `ghost small ${cls}`.trim(),
      "data-action": action, "aria-label": `${text} ${name} (${r.function})`, text });
    const errorText = el("span", { class: "result error", text: r.error });
    row = el("tr", { id: `failed-${r.id}`, "data-id": r.id },
      el("td", { class: "pick", "data-label": "Select" }, el("input", { type: "checkbox", class: "pick-one",
        "aria-label": `Select ${name} (${r.function})` })),
      el("td", { class: "muted when", "data-label": "Failed at" },
        el("time", { datetime: r.failed_at_utc, title: `${r.failed_at_utc} (UTC)` },
          ...localTime(r.failed_at).split(" ").flatMap((part, i) => [i ? " " : "", el("span", { class: "nowrap", text: part })]))),
      el("td", { class: "fn", "data-label": "Function", text: r.function }),
      el("td", { class: "unique", "data-label": "Unique id", text: r.unique || "—" }),
      el("td", { class: "err", "data-label": "Error" }, errorText),
      el("td", { class: "num", "data-label": "Attempts", text: String(r.attempts) }),
      el("td", { class: "actions-cell nowrap", "data-label": "Actions" },
        button("details", "Details"), button("retry", "Retry"), button("delete", "Delete", "delete")));
    if (r.repeat_of) errorText.after(el("span", { class: "muted note", text: `A repeat of record ${r.repeat_of}: the same job failed again.` }));
  }
  $(".pick-one", row).checked = failed.selected.has(r.id);
  return row;
}

// The rows of a page, changed in place: kept rows are not moved (a focused button keeps the focus), new
// ones are put where they belong, gone ones removed. When the focused row went, its successor takes the focus.
function renderFailedRows(records) {
  const body = $("#failed-rows");
  const focusedRow = document.activeElement?.closest?.("#failed-rows tr");
  const focusedAction = document.activeElement?.dataset?.action;
  const at = focusedRow ? [...body.children].indexOf(focusedRow) : -1;
  const rows = records.map(failedRow);
  if (!rows.length) {
    rows.push(el("tr", { class: "empty" }, el("td", { colspan: "7",
      text: Object.keys(failed.filter).some((k) => failed.filter[k]) ? "No failed job matches this filter." : "No job has failed for good." })));
  }
  const want = new Set(rows);
  for (const child of [...body.children]) if (!want.has(child)) child.remove();
  let next = body.firstElementChild;
  for (const row of rows) {
    if (row === next) { next = next.nextElementSibling; continue; }
    body.insertBefore(row, next);
  }
  if (focusedRow && !focusedRow.isConnected) {
    const heir = body.children[Math.min(at, body.children.length - 1)];
    focusOr(heir && (focusedAction ? $(`[data-action="${focusedAction}"]`, heir) : $(".pick-one", heir)), $("#page-failed .table-card"));
  }
  syncPageCheckbox();
}

function syncPageCheckbox() {
  const all = $("#failed-all");
  const ids = [...failed.records.keys()];
  const picked = ids.filter((id) => failed.selected.has(id)).length;
  all.checked = ids.length > 0 && picked === ids.length;
  all.indeterminate = picked > 0 && picked < ids.length;
}

function setUsable(button, usable) {
  // aria-disabled, not disabled: a disabled button drops the keyboard focus to the page.
  button.setAttribute("aria-disabled", String(!usable));
}

function renderFailedBar() {
  const n = failed.selected.size;
  setText($("#retry-selected"), n ? `Retry ${fmt(n)} selected` : "Retry selected");
  setText($("#delete-selected"), n ? `Delete ${fmt(n)} selected` : "Delete selected");
  setUsable($("#retry-selected"), n > 0);
  setUsable($("#delete-selected"), n > 0);
  setUsable($("#retry-matching"), failed.total > 0);
  setUsable($("#delete-matching"), failed.total > 0);
  setUsable($("#failed-first"), failed.page > 0);
  setUsable($("#failed-newer"), failed.page > 0);
  setUsable($("#failed-older"), Boolean(failed.next));
}

const usable = (button) => button.getAttribute("aria-disabled") !== "true";

// POST a retry or a delete; says what happened, and shows the page again. Returns the answer, or null.
async function failedAction(kind, body) {
  let response;
  try {
    response = await post(`/api/failed/${kind}`, { json: body });
  } catch (e) {
    say("The web app could not be reached (is it still running?).");
    return null;
  }
  if (!response.ok) {
    say(await readError(response));
    return null;
  }
  const answer = await response.json();
  if (body.ids) for (const id of body.ids) failed.selected.delete(id);
  else failed.selected.clear();
  let text;
  if (kind === "delete") {
    text = `Deleted ${plural(answer.deleted, "failed job")}.`;
  } else {
    text = `Retried ${plural(answer.retried, "job")}: submitted again as ${answer.retried === 1 ? "a background job" : "background jobs"}.`;
    if (answer.skipped) {
      const problem = answer.results.find((r) => r.problem)?.problem || "";
      text += ` ${fmt(answer.skipped)} not retried${problem ? `: ${problem}` : ""}.`;
    }
    if (answer.missing) text += ` ${fmt(answer.missing)} no longer in the store.`;
    if (answer.remaining) text += ` ${fmt(answer.remaining)} more match: press Retry all matching again to go on.`;
  }
  say(text);
  await loadFailed().catch(() => {});
  return answer;
}

async function retryOrDelete(kind, records) {
  const many = records.length > 1;
  const name = many ? plural(records.length, "failed job") : `${recordName(records[0])} (${records[0].function})`;
  const yes = await confirmAction(kind === "retry"
    ? { title: many ? `Retry ${name}?` : "Retry this job?",
        text: `${many ? "They are" : `${name} is`} submitted again as background ${many ? "jobs" : "job"} and ${many ? "their records" : "its record"} deleted; a job that fails again is recorded anew.`,
        ok: many ? `Retry ${fmt(records.length)}` : "Retry" }
    : { title: many ? `Delete ${name}?` : "Delete this record?",
        text: `${many ? "Their records are" : `The record of ${name} is`} deleted from the failed-job store. This cannot be undone.`,
        ok: many ? `Delete ${fmt(records.length)}` : "Delete", danger: true });
  if (!yes) return null;
  return failedAction(kind, { ids: records.map((r) => r.id) });
}

async function everythingMatching(kind) {
  const described = describeFilter(failed.filter);
  const what = described ? `${plural(failed.total, "failed job")} matching ${described}` : `every failed job (${fmt(failed.total)})`;
  const yes = await confirmAction(kind === "retry"
    ? { title: `Retry ${what}?`, text: `Each is submitted again as a background job and its record deleted, newest first, at most ${fmt((await configured()).limits.retry_per_request)} at a time; a job that fails again is recorded anew.`, ok: "Retry all" }
    : { title: `Delete ${what}?`, text: "Their records are deleted from the failed-job store. This cannot be undone.", ok: "Delete all", danger: true });
  if (!yes) return;
  const filter = {};
  for (const [k, v] of Object.entries(failed.filter)) if (v) filter[k] = v;
  await failedAction(kind, { filter });
}

// One record in full, in a dialog: its error, its workload (text or a hex dump), a download, Retry and Delete.
async function openFailedDetail(id) {
  const dialog = $("#failed-detail");
  const opener = document.activeElement;
  let r;
  try {
    r = await getJSON(`/api/failed/${encodeURIComponent(id)}`);
  } catch (e) {
    say(e.message);
    return;
  }
  setText($("#fd-title"), `Failed job ${recordName(r)}`);
  setText($("#fd-status"), "");
  const facts = [
    ["Function", r.function], ["Unique id", r.unique || "—"], ["Handle", r.handle || "—"], ["Server", r.server || "—"],
    ["Failed at", `${localTime(r.failed_at)} (${r.failed_at_utc} UTC)`], ["Attempts", String(r.attempts)],
    ["Workload", `${plural(r.workload_size, "byte")}${r.truncated ? `, of which the store kept the first ${plural(r.workload.bytes, "byte")}: retrying it would run another job` : ""}`],
    ["Record", r.repeat_of ? `${r.id} (a repeat of record ${r.repeat_of})` : r.id],
  ];
  $("#fd-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  setText($("#fd-error"), r.error);
  const w = r.workload;
  setText($("#fd-workload-kind"), w.kind === "text"
    ? `(text${w.cut ? `, the first ${fmt(w.text.length)} characters` : ""})`
    : `(a hex dump${w.cut ? " of the first 4 KiB" : ""})`);
  setText($("#fd-workload"), w.kind === "text" ? w.text || "(empty)" : w.hex || "(empty)");
  $("#fd-download").href = r.workload_url;
  const retry = $("#fd-retry"), del = $("#fd-delete");
  const act = async (kind) => {
    const answer = await retryOrDelete(kind, [r]);
    if (answer) dialog.close();
  };
  retry.onclick = () => act("retry");
  del.onclick = () => act("delete");
  $("#fd-close").onclick = () => dialog.close();
  dialog.onclose = () => focusOr(opener, $("#page-failed .table-card"));
  if (!dialog.open) dialog.showModal();
  $("#fd-close").focus();
}

// From a job row ("Open its record"): the Failed page, and the record on it.
function openFailedRecord(id) {
  if (location.hash !== "#failed") location.hash = "#failed";
  openFailedDetail(id);
}

function setupFailed() {
  const form = $("#failed-filter");
  const apply = () => {
    failed.filter = readFilter();
    failed.cursors = [null];
    failed.selected.clear();
    loadFailed({ page: 0 }).catch(() => {});
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  $("#f-clear").addEventListener("click", () => { form.reset(); apply(); });
  $("#failed-rows").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const r = failed.records.get(button.closest("tr").dataset.id);
    if (!r) return;
    if (button.dataset.action === "details") openFailedDetail(r.id);
    else retryOrDelete(button.dataset.action, [r]);
  });
  $("#failed-rows").addEventListener("change", (e) => {
    if (!e.target.classList.contains("pick-one")) return;
    const r = failed.records.get(e.target.closest("tr").dataset.id);
    if (!r) return;
    if (e.target.checked) failed.selected.set(r.id, r); else failed.selected.delete(r.id);
    syncPageCheckbox();
    renderFailedBar();
  });
  $("#failed-all").addEventListener("change", (e) => {
    for (const r of failed.records.values()) {
      if (e.target.checked) failed.selected.set(r.id, r); else failed.selected.delete(r.id);
    }
    renderFailedRows([...failed.records.values()]);
    renderFailedBar();
  });
  const guard = (id, run) => $(id).addEventListener("click", (e) => { if (usable(e.currentTarget)) run(); });
  guard("#retry-selected", () => retryOrDelete("retry", [...failed.selected.values()]));
  guard("#delete-selected", () => retryOrDelete("delete", [...failed.selected.values()]));
  guard("#retry-matching", () => everythingMatching("retry"));
  guard("#delete-matching", () => everythingMatching("delete"));
  guard("#failed-first", () => loadFailed({ page: 0 }).catch(() => {}));
  guard("#failed-newer", () => loadFailed({ page: failed.page - 1 }).catch(() => {}));
  guard("#failed-older", () => loadFailed({ page: failed.page + 1 }).catch(() => {}));
  // The first page follows new failures every 5 s; another page stays as it was read (its cursor holds it).
  poller("failed", 5000, async () => {
    if (failed.configured !== null && failed.page > 0) return;
    if ($("#failed-detail").open || $("#confirm").open) return;
    await loadFailed({ page: 0 });
    fillFunctionChoices();
  });
}

// The function box suggests every function the job servers know and those with records.
function fillFunctionChoices(extra = []) {
  const names = new Set([...state.functions, ...extra, ...[...failed.records.values()].map((r) => r.function)]);
  const list = $("#f-functions");
  const key = [...names].sort().join("\n");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren(...[...names].sort().map((f) => el("option", { value: f })));
}

// ---------------------------------------------------------------- queues

const queues = { data: null, history: null, historyAt: 0, historyKey: "" };
const RATE_COLUMNS = ["done_per_s", "failed_per_s", "p50", "p95"];

function chosenServer() { return $("#queue-server").value; }
function chosenSpan() { return $('input[name="span"]:checked').value; }

function fillSelect(select, values, allText) {
  const key = values.join("\n");
  if (select.dataset.key === key) return;
  select.dataset.key = key;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: allText }), ...values.map((v) => el("option", { value: v, text: v })));
  select.value = values.includes(chosen) ? chosen : "";
}

function renderQueues(data) {
  queues.data = data;
  fillSelect($("#queue-server"), data.servers.map((s) => s.address), "All servers");
  const server = chosenServer();
  const table = $("#queue-table");
  const rates = data.worker_metrics !== null;
  table.classList.toggle("per-server", Boolean(server));
  table.classList.toggle("no-rates", !rates);
  table.classList.toggle("no-failed", !data.failed_store);
  let rows;
  if (server) {
    const s = data.servers.find((x) => x.address === server);
    rows = s && s.ok ? s.functions : [];
  } else {
    rows = data.functions;
  }
  const body = $("#queue-rows");
  const made = rows.map((f) => {
    let row = $(`tr[data-function="${CSS.escape(f.function)}"]`, body);
    if (!row) {
      const cell = (cls, label) => el("td", { class: cls, "data-label": label });
      row = el("tr", { "data-function": f.function },
        cell("fn title", "Function"), cell("num waiting", "Waiting"), cell("num running", "Running"), cell("num workers", "Workers"),
        cell("num fn-wide failed-records", "Failed records"), cell("num fn-wide rate", "Done/s"), cell("num fn-wide rate", "Failed/s"),
        cell("num fn-wide rate", "p50"), cell("num fn-wide rate", "p95"));
      setText(row.cells[0], f.function);
    }
    setText(row.cells[1], fmt(f.waiting));
    setText(row.cells[2], fmt(f.running));
    setText(row.cells[3], fmt(f.workers));
    row.classList.toggle("unserved", f.workers === 0 && f.waiting > 0);
    if (!server) {
      const records = f.failed_records;
      const cell = row.cells[4];
      const link = $("a", cell);
      if (records) {
        const text = fmt(records);
        if (!link) cell.replaceChildren(el("a", { href: "#failed", class: "to-failed", "data-function": f.function, text,
          "aria-label": `${text} failed records of ${f.function}` }));
        else if (link.textContent !== text) { link.textContent = text; link.setAttribute("aria-label", `${text} failed records of ${f.function}`); }
      } else {
        setText(cell, records === 0 ? "0" : "—");
      }
      const values = [perSecond(f.done_per_s), perSecond(f.failed_per_s), duration(f.p50), duration(f.p95)];
      values.forEach((v, i) => setText(row.cells[5 + i], rates ? v : "—"));
    }
    return row;
  });
  if (!made.length) {
    const s = server && data.servers.find((x) => x.address === server);
    made.push(el("tr", { class: "empty" }, el("td", { colspan: "9",
      text: s && !s.ok ? s.error : "No function is known yet: none has been registered or submitted." })));
  }
  const want = new Set(made);
  for (const child of [...body.children]) if (!want.has(child)) child.remove();
  let next = body.firstElementChild;
  for (const row of made) {
    if (row === next) { next = next.nextElementSibling; continue; }
    body.insertBefore(row, next);
  }
  const notes = [];
  if (server) notes.push("Failed records and rates are per function, over all servers: choose All servers to see them.");
  else if (!rates) notes.push("Jobs done and failed per second and run times (p50, p95) come from the workers' metrics: give the web app their --metrics addresses (the web_worker_metrics setting).");
  else {
    const answered = data.worker_metrics.workers.filter((w) => w.ok).length;
    notes.push(`Per second and run times over the last ${Math.round(data.worker_metrics.window)} s, from the metrics of ${answered} of ${plural(data.worker_metrics.workers.length, "worker")}.`);
  }
  if (!server && !data.failed_store) notes.push("Failed records need the failed_jobs setting.");
  setText($("#queue-note"), notes.join(" "));
}

async function loadHistory(force = false) {
  const span = chosenSpan();
  const key = JSON.stringify([span, $("#chart-function").value, chosenServer()]);
  const every = span === "hour" ? 5000 : 60000;
  if (!force && key === queues.historyKey && Date.now() - queues.historyAt < every) return;
  const params = new URLSearchParams({ span });
  if ($("#chart-function").value) params.set("function", $("#chart-function").value);
  if (chosenServer()) params.set("server", chosenServer());
  const data = await getJSON(`/api/queues/history?${params}`);
  if (key !== JSON.stringify([chosenSpan(), $("#chart-function").value, chosenServer()])) return;  // changed meanwhile
  queues.history = data;
  queues.historyAt = Date.now();
  queues.historyKey = key;
  const known = new Set(data.functions);
  for (const f of queues.data?.functions || []) known.add(f.function);
  fillSelect($("#chart-function"), [...known].sort(), "All functions");
  drawHistory();
}

function drawHistory() {
  const data = queues.history;
  if (!data) return;
  const span = data.span === "hour" ? "last hour" : "last day, per minute";
  const jobs = data.span === "day"
    ? [{ name: "Waiting (mean)", values: data.waiting, cls: "waiting" }, { name: "Waiting (peak)", values: data.waiting_max, cls: "peak" },
      { name: "Running (mean)", values: data.running, cls: "running" }]
    : [{ name: "Waiting", values: data.waiting, cls: "waiting" }, { name: "Running", values: data.running, cls: "running" }];
  const workers = [{ name: data.span === "day" ? "Workers (mean)" : "Workers", values: data.workers, cls: "workers" }];
  // Summed over functions, a worker counts once for each function it serves (and each server it is on).
  const who = $("#chart-function").value ? "Workers" : "Workers, once per function served";
  drawChart($("#chart-jobs"), data, jobs, `Jobs waiting and running, ${span}`);
  drawChart($("#chart-workers"), data, workers, `${who}, ${span}`);
  $("#chart-jobs-legend").replaceChildren(...jobs.map((s) => legendItem(s.name, s.cls)));
  $("#chart-workers-legend").replaceChildren(...workers.map((s) => legendItem(s.name, s.cls)));
  setText($("#chart-jobs-title"), `Jobs waiting and running, ${span}`);
  setText($("#chart-workers-title"), `${who}, ${span}`);
}

function setupQueues() {
  poller("queues", 2000, async () => {
    try {
      renderQueues(await getJSON("/api/queues"));
    } catch (e) {
      setText($("#queue-note"), e.message);
    }
    await loadHistory();
  });
  $("#queue-server").addEventListener("change", () => {
    if (queues.data) renderQueues(queues.data);
    loadHistory(true).catch(() => {});
  });
  $("#chart-function").addEventListener("change", () => loadHistory(true).catch(() => {}));
  for (const radio of document.querySelectorAll('input[name="span"]')) radio.addEventListener("change", () => loadHistory(true).catch(() => {}));
  // "Failed records" links: the Failed page, filtered by that function.
  $("#queue-rows").addEventListener("click", (e) => {
    const link = e.target.closest("a.to-failed");
    if (!link) return;
    const form = $("#failed-filter");
    form.reset();
    form.function.value = link.dataset.function;
    failed.filter = readFilter();
    failed.cursors = [null];
    failed.page = 0;
    failed.selected.clear();
  });
  // Charts are drawn at the width they have: again when it changes (a phone turned, a window resized).
  let width = 0;
  new ResizeObserver((entries) => {
    const now = Math.round(entries[0].contentRect.width);
    if (now !== width) { width = now; requestAnimationFrame(drawHistory); }
  }).observe($("#chart-jobs"));
}

// ---------------------------------------------------------------- workers

function renderWorkers(data) {
  const processes = data.hosts.reduce((n, h) => n + h.processes.length, 0);
  const clients = data.servers.reduce((n, s) => n + s.clients, 0);
  setText($("#workers-summary"), `${plural(data.hosts.length, "host")} · ${plural(processes, "worker process", "worker processes")} · ` +
    `${plural(clients, "client connection")} without functions`);
  $("#worker-servers").replaceChildren(...data.servers.filter((s) => !s.ok).map((s) =>
    el("p", { class: "card server-error", text: `${s.address}: ${s.error}` })));
  const list = $("#worker-hosts");
  $(".loading", list)?.remove();
  const cards = data.hosts.map((h) => {
    const key = JSON.stringify(h);
    let card = [...list.querySelectorAll("section.host")].find((c) => c.dataset.host === h.host);
    if (!card || card.dataset.key !== key) {
      const fresh = hostCard(h);
      fresh.dataset.key = key;
      const refocus = card && card.contains(document.activeElement);
      if (card) card.replaceWith(fresh);
      card = fresh;
      if (refocus) ($(".table-scroll", card) || card).focus();
    }
    return card;
  });
  if (!cards.length) cards.push(el("p", { class: "muted empty-note", text: "No worker is connected to any job server." }));
  const want = new Set(cards);
  for (const child of [...list.children]) if (!want.has(child)) child.remove();
  let next = list.firstElementChild;
  for (const card of cards) {
    if (card === next) { next = next.nextElementSibling; continue; }
    list.insertBefore(card, next);
  }
}

function hostCard(h) {
  const rows = h.processes.map((p) => el("tr", { "data-pid": p.pid ?? "", "data-client-id": p.client_id },
    el("td", { class: "title", "data-label": "Process" },
      el("span", { class: "proc", text: p.gearworker ? `pid ${p.pid}` : p.client_id || "(no client id)" }),
      el("span", { class: "muted note", text: `${p.gearworker ? p.client_id : "not gearworker"} · from ${p.addresses.join(", ")}` })),
    el("td", { class: "nowrap", "data-label": "Version", text: p.version ? `gearworker ${p.version}` : "—" }),
    el("td", { class: "fn wrap full", "data-label": "Functions", text: p.functions.join(", ") }),
    el("td", { class: "fn wrap full", "data-label": "Servers", text: p.servers.join(", ") }),
    el("td", { class: "num", "data-label": "Connections", text: String(p.connections) })));
  const table = el("table", { class: "table workers-table stack-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Process" }), el("th", { text: "Version" }), el("th", { text: "Functions" }),
      el("th", { text: "Servers" }), el("th", { class: "num", text: "Connections" }))),
    el("tbody", {}, ...rows));
  return el("section", { class: "card server host", "data-host": h.host, tabindex: "-1" },
    el("div", { class: "server-head" }, el("h2", { text: h.host }),
      el("span", { class: "muted", text: `${plural(h.processes.length, "process", "processes")} · ${plural(h.functions.length, "function")}` })),
    el("div", { class: "table-scroll", role: "region", "aria-label": `Worker processes on ${h.host}`, tabindex: "0" }, table));
}

function setupWorkers() {
  poller("workers", 5000, async () => {
    try {
      renderWorkers(await getJSON("/api/workers"));
    } catch (e) {
      setText($("#workers-summary"), e.message);
    }
  });
}

keepFocusIn($("#confirm"));
keepFocusIn($("#failed-detail"));
setupFailed();
setupQueues();
setupWorkers();
