// The mockgen dashboard: polls the JSON control API (/_mock/) every second and renders it.
// Plain JavaScript, no build step, no CDN. Every string from the server goes into the page through
// textContent or attributes set one by one, never parsed as HTML: prompts are user input.
"use strict";

(() => {
  const TOKEN_KEY = "mockgen.adminToken";
  const POLL_MS = 1000;
  const TASK_LIMIT = 200; // newest tasks shown; the server may hold a million
  const ACCOUNT_LIMIT = 24; // accounts whose ledger is fetched on each poll
  const LEDGER_LIMIT = 40; // ledger lines shown per account
  const RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"];
  const STATUS = { 1: "queued", 2: "running", 3: "success", 4: "failed" };

  const view = {
    scenario: null, // GET /_mock/scenario of the scenario in force
    scenarioName: null,
    clock: null,
    now: 0,
    rows: new Map(), // task_id -> {tr, sig, hint}
    accounts: new Map(), // key -> {card, amount, balance, name, ledger, sig, credits}
    accountsSig: "",
    pendingAccount: null, // a key the try-it form just used, to select once it is listed
    locked: false,
  };

  const $ = (id) => document.getElementById(id);

  // el("td", {className: "x", dataset: {a: "1"}, title: "t"}, "text", child) -> an element.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- talking to the server -------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function call(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: "no-store" };
    // Every change is sent as JSON, a body or not: the server refuses what another page could send.
    if (method !== "GET") headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(`/_mock/${path}`, init);
    if (response.status === 401) {
      askForToken(Boolean(token));
      throw new Unauthorized("the control API needs the admin token");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      throw new Error(`${method} /_mock/${path}: HTTP ${response.status}, not JSON: ${text.slice(0, 120)}`);
    }
    if (!response.ok) {
      const issues = data && Array.isArray(data.issues) ? data.issues.map((i) => i.message || JSON.stringify(i)) : [];
      const reason = data && data.error ? data.error : `${response.status} ${response.statusText}`;
      throw new Error([reason, ...issues].join("; "));
    }
    return { data, headers: response.headers };
  }

  const control = async (method, path, body) => (await call(method, path, body)).data;

  // The public API, as a client would call it (never needs the admin token, only the account key).
  async function submitTask(key, body) {
    const response = await fetch("/api/v1/tasks/create", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    // A scenario's faults may answer 429/5xx in plain text, or a cut-off body: show whatever came.
    const text = await response.text();
    let answer = null;
    try {
      answer = JSON.parse(text);
    } catch {
      answer = null;
    }
    return { status: response.status, answer, text, fault: response.headers.get("x-mockgen-fault") };
  }

  // --- admin token -------------------------------------------------------------------------------

  function askForToken(refused) {
    view.locked = true;
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-error").hidden = !refused;
    $("token-dialog").hidden = false;
    $("token-input").focus();
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-dialog").hidden = true;
    view.locked = false;
    view.scenarioName = null; // load the scenario and its lists again
    refreshNow();
  });

  // --- formatting --------------------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");

  function clockText(seconds) {
    const d = new Date(seconds * 1000);
    const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    return `${date} ${timeText(seconds)} UTC`;
  }

  function timeText(seconds) {
    const d = new Date(seconds * 1000);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }

  function inText(seconds) {
    if (seconds < 0.05) return "due now";
    if (seconds < 90) return `in ${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    if (seconds < 5400) return `in ${Math.round(seconds / 60)} min`;
    return `in ${(seconds / 3600).toFixed(1)} h`;
  }

  function accountLabel(account) {
    const key = account.key;
    const short = `${key.slice(0, 7)}…${key.slice(-4)}`;
    return account.name ? `${account.name} (${short})` : short;
  }

  // --- notices -----------------------------------------------------------------------------------

  let noticeTimer = null;

  function notify(message, kind = "ok") {
    const box = $("notice");
    box.textContent = message;
    box.className = `notice ${kind}`;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (box.hidden = true), kind === "error" ? 8000 : 4000);
  }

  $("notice").addEventListener("click", () => ($("notice").hidden = true));

  function reportError(error) {
    if (!(error instanceof Unauthorized)) notify(error.message, "error");
  }

  // Runs an action, then refreshes at once so its effect (a refund, a new row) shows without waiting.
  async function act(button, action) {
    if (button) button.disabled = true;
    try {
      await action();
    } catch (error) {
      reportError(error);
    } finally {
      if (button) button.disabled = false;
      refreshNow();
    }
  }

  // --- rendering: header -------------------------------------------------------------------------

  function renderWorld(health) {
    view.clock = health.clock;
    view.now = health.now;
    $("scenario-name").textContent = health.scenario;
    $("clock-kind").textContent = `${health.clock} clock`;
    $("clock-now").textContent = clockText(health.now);
    const manual = health.clock === "manual";
    for (const button of document.querySelectorAll("#advance-form button, #advance-quick button")) {
      button.disabled = !manual;
    }
    $("advance-seconds").disabled = !manual;
    $("advance-note").hidden = manual;
  }

  function renderScenario(scenario, names) {
    view.scenario = scenario;
    $("scenario-description").textContent = scenario.description || "";
    const models = $("submit-model");
    const chosen = models.value;
    models.replaceChildren(
      ...Object.entries(scenario.models).map(([id, m]) =>
        el("option", { value: id }, `${id} (${m.task_type}, ${m.cost} credits)`),
      ),
    );
    if (chosen in scenario.models) models.value = chosen;
    const select = $("scenario-select");
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
    if (!names.includes(scenario.name)) select.prepend(el("option", { value: "" }, `${scenario.name} (custom)`));
    select.value = names.includes(scenario.name) ? scenario.name : "";
    view.accountsSig = ""; // the "new key" option depends on the auth mode
  }

  // --- rendering: accounts and ledgers -----------------------------------------------------------

  function renderAccounts(accounts, total) {
    const list = $("account-list");
    const seen = new Set();
    let position = 0;
    for (const account of accounts) {
      seen.add(account.key);
      const card = accountCard(account);
      const at = list.children[position];
      if (at !== card) list.insertBefore(card, at || null);
      position += 1;
    }
    for (const [key, known] of view.accounts) {
      if (!seen.has(key)) {
        known.card.remove();
        view.accounts.delete(key);
      }
    }
    const more = $("accounts-more");
    more.textContent = total > accounts.length ? `${total - accounts.length} more accounts are not shown.` : "";
    $("no-accounts").hidden = total > 0;
    renderAccountChoice(accounts);
  }

  // One card per account, built once; its balance and ledger are redrawn only when they change, so a
  // click or a half-typed amount is never lost to the once-a-second poll.
  function accountCard(account) {
    let known = view.accounts.get(account.key);
    if (!known) known = newAccountCard(account);
    const ledger = account.ledger || [];
    const sig = JSON.stringify([account.credits, account.name, account.ledgerTotal, ledger[ledger.length - 1]]);
    if (sig !== known.sig) {
      const previous = known.credits;
      known.amount.textContent = String(account.credits);
      known.name.textContent = account.name || "(no name)";
      known.balance.classList.remove("flash-up", "flash-down");
      if (previous !== undefined && previous !== account.credits) {
        void known.balance.offsetWidth; // restart the animation
        known.balance.classList.add(account.credits > previous ? "flash-up" : "flash-down");
      }
      known.ledger.replaceWith((known.ledger = ledgerList(ledger, account.ledgerTotal)));
      known.credits = account.credits;
      known.sig = sig;
    }
    return known.card;
  }

  function newAccountCard(account) {
    const amount = el("span", { className: "amount", dataset: { role: "balance" } });
    const balance = el("div", { className: "balance" }, amount, el("span", { className: "unit" }, "credits"));
    const name = el("strong", { className: "account-name" });
    const input = el("input", {
      type: "number",
      step: "1",
      value: "100",
      "aria-label": `top-up amount for ${account.name || account.key}`,
    });
    const topup = el("form", { className: "topup" }, input, el("button", { type: "submit" }, "Top up"));
    topup.addEventListener("submit", (event) => {
      event.preventDefault();
      const delta = Number.parseInt(input.value, 10);
      if (!Number.isFinite(delta) || delta === 0) {
        notify("Enter a whole number of credits (a negative one takes credits away).", "error");
        return;
      }
      act(event.submitter, async () => {
        await control("POST", `accounts/${encodeURIComponent(account.key)}/credits`, { delta });
        const verb = delta > 0 ? `Added ${delta} credits to` : `Took ${-delta} credits from`;
        notify(`${verb} ${accountLabel(account)}.`);
      });
    });
    const ledger = el("ol");
    const card = el(
      "article",
      { className: "account", dataset: { key: account.key } },
      el("header", {}, el("div", {}, name, el("code", { className: "key", title: "the API key" }, account.key)), balance),
      topup,
      ledger,
    );
    const known = { card, amount, balance, name, ledger, sig: "", credits: undefined };
    view.accounts.set(account.key, known);
    return known;
  }

  function ledgerList(ledger, total) {
    const rows = ledger.slice().reverse().map((entry) => {
      const sign = entry.kind === "charge" || entry.amount < 0 ? "−" : "+";
      return el(
        "li",
        { className: `ledger-${entry.kind}`, dataset: { kind: entry.kind, task: entry.task_id || "" } },
        el("span", { className: "kind" }, entry.kind),
        el("span", { className: "delta" }, `${sign}${Math.abs(entry.amount)}`),
        el("span", { className: "what" }, entry.task_id ? `task ${entry.task_id}` : "by hand"),
        el("time", {}, timeText(entry.at)),
      );
    });
    if (!rows.length) rows.push(el("li", { className: "empty" }, "no ledger entries yet"));
    if (total > ledger.length) rows.push(el("li", { className: "empty" }, `and ${total - ledger.length} earlier entries`));
    return el("ol", { className: "ledger", "aria-label": "ledger, newest first" }, ...rows);
  }

  function renderAccountChoice(accounts) {
    const open = view.scenario && view.scenario.auth_mode === "open";
    const sig = JSON.stringify([open, accounts.map((a) => [a.key, a.name])]);
    if (sig === view.accountsSig) return;
    view.accountsSig = sig;
    const select = $("submit-account");
    const chosen = accounts.some((a) => a.key === view.pendingAccount) ? view.pendingAccount : select.value;
    if (chosen === view.pendingAccount) view.pendingAccount = null;
    const options = accounts.map((a) => el("option", { value: a.key }, accountLabel(a)));
    if (open) options.push(el("option", { value: "new" }, "a new key (open auth gives it credits)"));
    if (!options.length) options.push(el("option", { value: "" }, "no account: create a key first"));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  // --- rendering: tasks --------------------------------------------------------------------------

  function renderTasks(tasks, total) {
    const body = $("task-rows");
    const seen = new Set();
    const counts = { 1: 0, 2: 0, 3: 0, 4: 0 };
    let position = 0;
    for (const task of tasks.slice().reverse()) {
      seen.add(task.task_id);
      counts[task.status] += 1;
      const row = taskRow(task);
      const at = body.children[position];
      if (at !== row.tr) body.insertBefore(row.tr, at || null);
      row.hint.textContent = hintText(task);
      position += 1;
    }
    for (const [id, row] of view.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        view.rows.delete(id);
      }
    }
    $("no-tasks").hidden = tasks.length > 0;
    const parts = [1, 2, 3, 4].filter((s) => counts[s]).map((s) => `${counts[s]} ${STATUS[s]}`);
    const shown = total > tasks.length ? ` (newest ${tasks.length} of ${total})` : "";
    $("task-summary").textContent = parts.length ? `${parts.join(" · ")}${shown}` : "";
  }

  function taskRow(task) {
    const sig = JSON.stringify([task.status, task.result_url, task.message, task.account, task.timeline, task.lost_answer]);
    const known = view.rows.get(task.task_id);
    if (known && known.sig === sig) return known;
    const tr = known ? known.tr : el("tr");
    tr.dataset.taskId = task.task_id;
    tr.dataset.status = String(task.status);
    tr.className = `status-${task.status}${known ? " flash" : " appear"}`;
    const hint = el("div", { className: "hint" });
    const req = task.request;
    tr.replaceChildren(
      el("td", {}, el("code", { className: "task-id" }, task.task_id), lostMarker(task), el("div", { className: "hint" }, timeText(task.timeline.created_at))),
      el("td", { className: "account-cell", title: task.key }, task.account || `${task.key.slice(0, 7)}…${task.key.slice(-4)}`),
      el("td", { className: "model" }, req.model_id, el("div", { className: "hint" }, `${task.task_type} · ${req.aspect_ratio}`)),
      el("td", { className: "prompt", dataset: { role: "prompt" } }, req.prompt),
      el("td", {}, el("span", { className: `badge s${task.status}`, dataset: { role: "status" } }, `${task.status} ${STATUS[task.status]}`), hint),
      el("td", { className: "result" }, resultCell(task)),
      el("td", { className: "num" }, String(task.credits)),
      el("td", { className: "actions" }, ...resolveButtons(task)),
    );
    const row = { tr, sig, hint };
    view.rows.set(task.task_id, row);
    return row;
  }

  // A task created behind a lost answer: charged, while its client never saw the task id.
  function lostMarker(task) {
    if (!task.lost_answer) return null;
    const title = `created and charged, then the answer was lost (fault ${task.lost_answer}): a client that retried may have paid twice`;
    return el("span", { className: "lost-answer", title, dataset: { role: "lost-answer" } }, "answer lost");
  }

  function resultCell(task) {
    if (task.status === 3 && task.result_url) {
      if (task.task_type === "video") {
        return el("a", { className: "video-link", href: task.result_url, target: "_blank", rel: "noopener" }, "▶ video (mp4)");
      }
      const link = el("a", { href: task.result_url, target: "_blank", rel: "noopener", title: "open the full image" });
      const thumb = el("img", { className: "thumb", src: task.result_url, alt: `result of task ${task.task_id}` });
      // A scenario with fake CDN URLs (results: cdn) hands out links that cannot load offline.
      thumb.addEventListener("error", () => thumb.replaceWith("image (not loadable here)"));
      link.append(thumb);
      return link;
    }
    if (task.status === 4) return el("span", { className: "error-text" }, task.message || task.failure_message || "failed");
    return el("span", { className: "hint" }, task.planned_outcome === "failed" ? "will fail" : "—");
  }

  function resolveButtons(task) {
    if (task.status > 2) return [];
    const resolve = (outcome) => (event) =>
      act(event.currentTarget, async () => {
        await control("POST", `tasks/${encodeURIComponent(task.task_id)}/resolve`, { outcome });
        notify(outcome === "failed" ? `Task ${task.task_id} failed: its ${task.credits} credits were refunded.` : `Task ${task.task_id} succeeded.`);
      });
    return [
      el("button", { type: "button", className: "ok", onclick: resolve("success"), title: "finish it now as a success" }, "✓ Success"),
      el("button", { type: "button", className: "bad", onclick: resolve("failed"), title: "finish it now as a failure (refunds)" }, "✗ Fail"),
    ];
  }

  function hintText(task) {
    const t = task.timeline;
    if (task.status === 1 && t.running_at !== null) return `runs ${inText(t.running_at - view.now)}`;
    if (task.status === 2 && t.finish_at !== null) return `${task.planned_outcome === "failed" ? "fails" : "done"} ${inText(t.finish_at - view.now)}`;
    if (task.status <= 2 && task.progress === "polls") return `moves on when polled (${task.polls} so far)`;
    if (task.status <= 2) return "waits to be resolved";
    return t.settled_at !== null ? `at ${timeText(t.settled_at)}` : "";
  }

  // --- polling -----------------------------------------------------------------------------------

  async function refresh() {
    const [health, accounts, tasks] = await Promise.all([
      control("GET", "health"),
      call("GET", `accounts?limit=${ACCOUNT_LIMIT}`), // the newest: a world may hold 100,000
      call("GET", `tasks?limit=${TASK_LIMIT}`),
    ]);
    if (health.scenario !== view.scenarioName) {
      const [scenario, names] = await Promise.all([control("GET", "scenario"), control("GET", "scenarios")]);
      view.scenarioName = health.scenario;
      view.rows.clear();
      $("task-rows").replaceChildren();
      renderScenario(scenario, names);
    }
    const ledgers = await Promise.all(
      accounts.data.map(async (a) => {
        const { data, headers } = await call("GET", `accounts/${encodeURIComponent(a.key)}?limit=${LEDGER_LIMIT}`);
        return { ...data, ledgerTotal: Number(headers.get("x-total-count") || data.ledger.length) };
      }),
    );
    // Balances come from the same answers as the ledgers, so the two always agree on the page.
    renderWorld(health);
    renderAccounts(ledgers, Number(accounts.headers.get("x-total-count") || accounts.data.length));
    renderTasks(tasks.data, Number(tasks.headers.get("x-total-count") || tasks.data.length));
  }

  let inflight = null;
  let again = false;

  function setLive(ok, why) {
    $("live").className = ok ? "live ok" : "live down";
    $("live-text").textContent = ok ? "live" : why;
  }

  function refreshNow() {
    if (inflight) {
      again = true;
      return inflight;
    }
    inflight = refresh()
      .then(() => setLive(true))
      .catch((error) => setLive(false, error instanceof Unauthorized ? "locked" : "disconnected"))
      .finally(() => {
        inflight = null;
        if (again && !view.locked) {
          again = false;
          refreshNow();
        }
      });
    return inflight;
  }

  setInterval(() => {
    if (!view.locked) refreshNow();
  }, POLL_MS);

  // --- controls ----------------------------------------------------------------------------------

  function advance(seconds, button) {
    act(button, async () => {
      const { now } = await control("POST", "clock/advance", { seconds });
      notify(`The clock moved ${seconds} s, to ${clockText(now)}.`);
    });
  }

  $("advance-form").addEventListener("submit", (event) => {
    event.preventDefault();
    advance(Number($("advance-seconds").value), event.submitter);
  });

  for (const button of document.querySelectorAll("#advance-quick button")) {
    button.addEventListener("click", () => advance(Number(button.dataset.seconds), button));
  }

  $("scenario-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("scenario-select").value;
    if (!name) return;
    act(event.submitter, async () => {
      await control("PUT", "scenario", { name });
      view.scenarioName = null;
      notify(`Scenario ${name} loaded, from its starting state.`);
    });
  });

  // Reset asks for a second click instead of a confirm() box (which a demo audience cannot see well).
  const resetButton = $("reset-button");
  let resetArmed = null;
  resetButton.addEventListener("click", () => {
    if (!resetArmed) {
      resetButton.textContent = "Click again to reset";
      resetButton.classList.add("armed");
      resetArmed = setTimeout(() => {
        resetArmed = null;
        resetButton.textContent = "Reset the world";
        resetButton.classList.remove("armed");
      }, 3000);
      return;
    }
    clearTimeout(resetArmed);
    resetArmed = null;
    resetButton.textContent = "Reset the world";
    resetButton.classList.remove("armed");
    act(resetButton, async () => {
      await control("POST", "reset");
      view.rows.clear();
      $("task-rows").replaceChildren();
      notify("The world is back at the scenario's starting state.");
    });
  });

  $("create-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const credits = Number.parseInt($("new-key-credits").value, 10);
    const name = $("new-key-name").value.trim();
    act(event.submitter, async () => {
      const account = await control("POST", "accounts", name ? { credits, name } : { credits });
      $("new-key-name").value = "";
      notify(`New key ${account.key} with ${account.credits} credits.`);
    });
  });

  function randomKey() {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    return `sk-${Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("")}`;
  }

  $("submit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let key = $("submit-account").value;
    if (!key) return notify("Create a key first (Accounts, on the right).", "error");
    if (key === "new") key = randomKey();
    const body = { model_id: $("submit-model").value, prompt: $("submit-prompt").value };
    const ratio = $("submit-ratio").value;
    if (ratio) body.aspect_ratio = ratio;
    const out = $("submit-result");
    act(event.submitter, async () => {
      const { status, answer, text, fault } = await submitTask(key, body);
      const ok = Boolean(answer && answer.code === 200);
      out.className = `result-line ${ok ? "ok" : "bad"}`;
      const parts = [`HTTP ${status}`];
      if (fault) parts.push(`fault ${fault}`);
      if (answer && typeof answer === "object") {
        parts.push(`code ${answer.code}`, String(answer.msg));
        if (answer.data && answer.data.task_id) parts.push(`task ${answer.data.task_id}, ${answer.data.credits} credits`);
      } else {
        parts.push(text ? text.slice(0, 200) : "(empty body)");
      }
      out.textContent = parts.join(" · ");
      if (ok) {
        $("submit-prompt").value = "";
        view.pendingAccount = key;
      }
    });
  });

  $("submit-ratio").replaceChildren(
    el("option", { value: "" }, "model default"),
    ...RATIOS.map((r) => el("option", { value: r }, r)),
  );

  refreshNow();
})();
