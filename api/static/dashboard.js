// Tally's ops dashboard: a client of the JSON API with an ops key kept in sessionStorage.
// Everything from the API is written with textContent, never as HTML (api/dashboard.py).
"use strict";

const KEY_ITEM = "tally.opsKey";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let refreshTimer = null;

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, { method = "GET", key = sessionStorage.getItem(KEY_ITEM) } = {}) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
    cache: "no-store",
  });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut("The key was refused; sign in again.");
    throw new ApiError(response.status, body);
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

const shortId = (id) => (id ? id.slice(0, 8) : "");
// RFC 3339 UTC to "YYYY-MM-DD HH:MM:SS" (UTC), to the second.
const when = (ts) => (ts ? ts.slice(0, 19).replace("T", " ") : "");

function age(seconds) {
  if (seconds <= 0) return "none";
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function amountOf(t) {
  if (t.legs) return `${t.legs.length} legs`;
  return `${t.amount} ${t.currency}`;
}

function idCell(id) {
  const code = el("code", shortId(id));
  code.title = id;
  return code;
}

function walletButton(id) {
  const button = el("button", shortId(id), "link");
  button.type = "button";
  button.title = `open wallet ${id}`;
  button.dataset.wallet = id;
  button.addEventListener("click", () => openWallet(id));
  return button;
}

function walletsOf(t) {
  const ids = t.legs
    ? t.legs.flatMap((leg) => [leg.source_wallet_id, leg.destination_wallet_id])
    : [t.source_wallet_id, t.destination_wallet_id];
  const span = el("span");
  for (const id of [...new Set(ids.filter(Boolean))]) span.append(walletButton(id), " ");
  return span;
}

// A balance monitor's operator as its comparison sign.
const OPERATORS = { lt: "<", lte: "≤", gt: ">", gte: "≥" };

function statusBadge(status) {
  return el("span", status, `badge ${status}`);
}

// -- overview --------------------------------------------------------------------------------

async function loadOverview() {
  const overview = await api("/v1/ops/overview");
  $("pending-count").textContent = overview.pending.count;
  $("pending-age").textContent = age(overview.pending.oldest_age_seconds);
  const peak = Math.max(1, ...overview.throughput.map((m) => m.completed + m.failed + m.other));
  const bars = overview.throughput.map((m) => {
    const column = el("div", null, "bar");
    const total = m.completed + m.failed + m.other;
    column.title = `${when(m.minute)}: ${m.completed} completed, ${m.failed} failed, ${m.other} other`;
    for (const part of ["other", "failed", "completed"]) {
      const piece = el("div", null, `piece ${part}`);
      piece.style.height = `${(100 * m[part]) / peak}%`;
      column.append(piece);
    }
    const label = el("span", `${m.minute.slice(11, 16)} · ${total}`, "bar-label");
    const wrap = el("div", null, "bar-wrap");
    wrap.append(column, label);
    return wrap;
  });
  $("throughput").replaceChildren(...bars);
}

// -- transactions ----------------------------------------------------------------------------

async function loadTransactions() {
  const params = new URLSearchParams({ limit: "25" });
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  if ($("filter-type").value) params.set("type", $("filter-type").value);
  const page = await api(`/v1/transactions?${params}`);
  fill(
    "transactions",
    page.data.map((t) =>
      row([when(t.created_at), idCell(t.id), t.type, statusBadge(t.status), amountOf(t),
           t.failure_code, walletsOf(t)]),
    ),
  );
}

async function loadFailed() {
  const page = await api("/v1/transactions?status=failed&limit=25");
  $("failed-empty").hidden = page.data.length > 0;
  fill(
    "failed",
    page.data.map((t) => {
      const button = el("button", "Retry", "retry");
      button.type = "button";
      button.dataset.transaction = t.id;
      const outcome = el("span", null, "outcome");
      const actions = el("span");
      actions.append(button, " ", outcome);
      button.addEventListener("click", () => retry(t.id, button, outcome));
      const tr = row([when(t.created_at), idCell(t.id), t.type, amountOf(t), t.failure_code,
                      t.failure_message, actions]);
      tr.dataset.transaction = t.id;
      return tr;
    }),
  );
}

async function retry(id, button, outcome) {
  button.disabled = true;
  outcome.replaceChildren(statusBadge("pending"));
  try {
    let t = await api(`/v1/transactions/${id}/retry`, { method: "POST" });
    // Long-poll until a worker has applied it (docs/api.md, "Transactions": GET ?wait=N).
    for (let i = 0; i < 6 && t.status === "pending"; i++) {
      t = await api(`/v1/transactions/${id}?wait=10`);
    }
    outcome.replaceChildren(statusBadge(t.status));
    if (t.failure_code) outcome.append(" ", t.failure_code);
    await Promise.all([loadOverview(), loadTransactions()]);
  } catch (error) {
    outcome.replaceChildren(el("span", error.message, "error"));
    button.disabled = false;
  }
}

// -- wallet ----------------------------------------------------------------------------------

async function openWallet(id) {
  $("wallet-id").value = id;
  $("wallet-error").textContent = "";
  try {
    const [wallet, holds, entries, monitors] = await Promise.all([
      api(`/v1/wallets/${encodeURIComponent(id)}`),
      api(`/v1/transactions?wallet_id=${encodeURIComponent(id)}&type=hold&status=held&limit=50`),
      api(`/v1/wallets/${encodeURIComponent(id)}/entries?limit=25`),
      api(`/v1/balance-monitors?wallet_id=${encodeURIComponent(id)}&limit=50`),
    ]);
    $("wallet-owner").textContent = wallet.is_system ? `system (${wallet.currency})` : wallet.owner_ref;
    $("wallet-status").replaceChildren(statusBadge(wallet.status));
    $("wallet-balance").textContent = `${wallet.balance} ${wallet.currency}`;
    $("wallet-available").textContent = `${wallet.available_balance} ${wallet.currency}`;
    $("wallet-held").textContent = `${wallet.held_balance} ${wallet.currency}`;
    fill("wallet-holds", holds.data.map((h) =>
      row([when(h.created_at), idCell(h.id), amountOf(h), when(h.expires_at)])));
    fill("wallet-monitors", monitors.data.map((m) =>
      row([statusBadge(m.state), `${m.field} ${OPERATORS[m.operator]} ${m.value} ${wallet.currency}`,
           m.description, when(m.triggered_at), idCell(m.id)])));
    fill("wallet-entries", entries.data.map((e) =>
      row([e.sequence, when(e.created_at), idCell(e.transaction_id), e.transaction_type,
           e.direction, e.amount, e.balance_after])));
    $("wallet").hidden = false;
    $("wallet-section").scrollIntoView({ block: "start" });
  } catch (error) {
    $("wallet").hidden = true;
    $("wallet-error").textContent = error.message;
  }
}

// -- reconciliations -------------------------------------------------------------------------

async function loadReconciliations() {
  const page = await api("/v1/reconciliations?limit=10");
  const rows = [];
  for (const run of page.data) {
    const totals = Object.entries(run.currency_totals).map(([c, v]) => `${c} ${v}`).join(", ");
    rows.push(row([when(run.started_at), statusBadge(run.status), run.wallets_checked ?? "",
                   run.mismatches.length, totals]));
    for (const m of run.mismatches) {
      const detail = el("span", `stored ${m.stored_balance}, ledger ${m.ledger_balance} ${m.currency}`);
      const tr = row(["", "", walletButton(m.wallet_id), detail, ""]);
      tr.className = "mismatch";
      rows.push(tr);
    }
  }
  fill("reconciliations", rows);
}

// -- signing in and out ----------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadOverview(), loadFailed(), loadTransactions(), loadReconciliations()]);
  } catch (error) {
    console.warn("refresh failed", error);
  }
}

function showBoard(signedIn) {
  $("sign-in").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
  clearInterval(refreshTimer);
  if (signedIn) {
    refresh();
    refreshTimer = setInterval(() => loadOverview().catch(() => {}), REFRESH_MS);
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_ITEM);
  showBoard(false);
  $("sign-in-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const key = $("ops-key").value.trim();
  $("sign-in-error").textContent = "";
  try {
    await api("/v1/ops/overview", { key });
  } catch (error) {
    $("sign-in-error").textContent =
      error.status === 403 ? "That key is not an ops key." : `Sign-in failed: ${error.message}`;
    return;
  }
  sessionStorage.setItem(KEY_ITEM, key);
  $("ops-key").value = "";
  showBoard(true);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadTransactions();
  });
  $("wallet-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openWallet($("wallet-id").value.trim());
  });
  showBoard(Boolean(sessionStorage.getItem(KEY_ITEM)));
});
