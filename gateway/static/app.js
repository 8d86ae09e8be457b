// The ackflow page: POST /v1/requests with the API key, then follow the request's statuses and
// progress over Server-Sent Events through its capability URL (links.events), which needs no key;
// approve or reject a request that waits for input; list the tenant's recent requests, kept up to
// date by the tenant's event stream (read with fetch, since EventSource cannot send the key).
// Everything from the server is rendered with textContent, never as markup.
"use strict";

(() => {
  const EVENT_TYPES = [
    "request.accepted", "request.processing", "request.progress", "request.waiting", "request.input_received",
    "request.done", "request.failed", "request.cancelled",
  ];
  const RECENT_ROWS = 20;
  const RECONNECT_MS = 2000;
  const TERMINAL = new Set(["DONE", "FAILED", "CANCELLED"]);
  const KEY_STORAGE = "ackflow.apiKey";

  const $ = (id) => document.getElementById(id);
  const form = $("submit-form");
  const apiKey = $("api-key");
  const kind = $("kind");
  const payload = $("payload");
  const submitButton = $("submit");
  const cancelButton = $("cancel");
  const errorBox = $("error");
  const requestId = $("request-id");
  const live = $("live");
  const statuses = $("statuses");
  const outcome = $("outcome");
  const kinds = $("kinds");
  const progressBar = $("progress");
  const progressMessage = $("progress-message");
  const waitingBox = $("waiting");
  const recent = $("recent").tBodies[0];

  let current = null; // the request being watched: {id, source, version, status, waiting, ended}
  let tenantStream = null; // the tenant's event stream: an AbortController

  class ApiError extends Error {
    constructor(title, detail) {
      super(detail);
      this.title = title;
      this.detail = detail;
    }
  }

  function remembered() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return ""; // storage disabled: the key is simply not remembered
    }
  }

  function remember(key) {
    try {
      sessionStorage.setItem(KEY_STORAGE, key);
    } catch {
      // storage disabled or full: nothing to do
    }
  }

  function showError(title, detail) {
    $("error-title").textContent = title;
    $("error-detail").textContent = detail ? ` ${detail}` : "";
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    $("error-title").textContent = "";
    $("error-detail").textContent = "";
  }

  function announce(message) {
    live.textContent = message;
  }

  // An RFC 9457 problem (or any failed response) as an ApiError naming title, detail and fields.
  function problemError(response, body) {
    const problem = body && typeof body === "object" ? body : {};
    const title = typeof problem.title === "string" ? problem.title : `HTTP ${response.status}`;
    let detail = typeof problem.detail === "string" ? problem.detail : response.statusText;
    if (Array.isArray(problem.errors)) {
      const fields = problem.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
      if (fields) detail = `${detail} (${fields})`;
    }
    return new ApiError(`${title} (${response.status})`, detail);
  }

  async function callApi(method, path, body) {
    const headers = { Authorization: `Bearer ${apiKey.value.trim()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError("Request not sent", `the gateway could not be reached (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) throw problemError(response, data);
    return data;
  }

  function readPayload() {
    let value;
    try {
      value = JSON.parse(payload.value);
    } catch (error) {
      throw new ApiError("Invalid payload", `the payload is not valid JSON: ${error.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new ApiError("Invalid payload", "the payload must be a JSON object, like {\"hello\": \"world\"}");
    }
    return value;
  }

  function stopWatching() {
    if (current && current.source) current.source.close();
    if (current) current.ended = true;
    cancelButton.disabled = true;
    waitingBox.hidden = true;
  }

  function showOutcome(state) {
    outcome.dataset.status = state.status;
    if (state.status === "DONE") {
      outcome.textContent = JSON.stringify(state.result, null, 2);
    } else if (state.status === "FAILED") {
      const error = state.error || {};
      outcome.textContent = typeof error.message === "string"
        ? `${error.type || "Error"}: ${error.message}`
        : JSON.stringify(error, null, 2);
    } else {
      outcome.textContent = "Cancelled: the request will not run.";
    }
  }

  function timeOf(state) {
    const time = document.createElement("time");
    const at = state.updated_at || state.created_at;
    if (typeof at === "string") {
      time.dateTime = at;
      time.textContent = new Date(at).toLocaleTimeString();
    }
    return time;
  }

  function showProgress(progress) {
    if (!progress || typeof progress !== "object") return;
    if (typeof progress.fraction === "number") progressBar.value = progress.fraction;
    const percent = `${Math.round(progressBar.value * 100)} %`;
    progressMessage.textContent = typeof progress.message === "string" ? `${percent}, ${progress.message}` : percent;
  }

  // Approve and Reject: usable while no decision is on its way.
  function enableDecision(enabled) {
    for (const button of waitingBox.querySelectorAll("button")) button.disabled = !enabled;
  }

  function showWaiting(watched, waiting) {
    watched.waiting = waiting && typeof waiting.input === "string" ? waiting.input : null;
    waitingBox.hidden = watched.waiting === null || watched.ended;
    $("waiting-input").textContent = watched.waiting || "";
    enableDecision(true);
  }

  function onEvent(watched, event) {
    if (current !== watched || watched.ended) return;
    let state;
    try {
      state = JSON.parse(event.data);
    } catch {
      return;
    }
    if (typeof state.version === "number" && state.version <= watched.version) return; // a late duplicate
    watched.version = state.version;
    if (state.status !== watched.status) {
      watched.status = state.status;
      const item = document.createElement("li");
      item.dataset.status = state.status;
      item.dataset.event = event.type;
      const name = document.createElement("span");
      name.className = "status";
      name.textContent = state.status;
      item.append(name, timeOf(state));
      statuses.append(item);
    }
    showProgress(state.progress);
    upsertRecent(state);
    if (TERMINAL.has(state.status)) {
      showOutcome(state);
      stopWatching();
    }
    showWaiting(watched, state.waiting);
    announce(watched.waiting
      ? `Request ${watched.id}: waiting for ${watched.waiting}`
      : `Request ${watched.id}: ${state.status}`);
  }

  // EventSource reconnects by itself (with Last-Event-ID) while CONNECTING; CLOSED means it gave up.
  async function onStreamError(watched) {
    if (current !== watched || watched.ended) return;
    if (watched.source.readyState !== EventSource.CLOSED) {
      announce("Connection lost; reconnecting…");
      return;
    }
    stopWatching();
    try {
      const state = await callApi("GET", `/v1/requests/${encodeURIComponent(watched.id)}`);
      if (TERMINAL.has(state.status)) {
        showOutcome(state);
        announce(`Request ${watched.id}: ${state.status}`);
        return;
      }
    } catch {
      // fall through to the message below
    }
    showError("Live updates stopped", "the event stream closed before the request ended; submit again or check its status later.");
  }

  function watch(accepted) {
    stopWatching();
    const watched = { id: accepted.id, source: null, version: 0, status: null, waiting: null, ended: false };
    current = watched;
    requestId.textContent = accepted.id;
    statuses.replaceChildren();
    progressBar.value = 0;
    progressMessage.textContent = "";
    outcome.textContent = "";
    delete outcome.dataset.status;
    announce(`Request ${accepted.id} accepted`);
    watched.source = new EventSource(accepted.links.events);
    for (const type of EVENT_TYPES) {
      watched.source.addEventListener(type, (event) => onEvent(watched, event));
    }
    watched.source.addEventListener("error", () => onStreamError(watched));
    cancelButton.disabled = false;
  }

  async function submit(event) {
    event.preventDefault();
    clearError();
    if (!apiKey.value.trim()) {
      showError("API key missing", "enter your API key first.");
      apiKey.focus();
      return;
    }
    submitButton.disabled = true;
    try {
      const body = { kind: kind.value.trim(), payload: readPayload() };
      watch(await callApi("POST", "/v1/requests", body));
      if (!tenantStream) useKey();
    } catch (error) {
      showError(error.title || "Error", error.detail || String(error));
    } finally {
      submitButton.disabled = false;
    }
  }

  async function cancel() {
    const watched = current;
    if (!watched || watched.ended) return;
    clearError();
    cancelButton.disabled = true;
    try {
      await callApi("POST", `/v1/requests/${encodeURIComponent(watched.id)}/cancel`);
      if (!watched.ended) announce(`Request ${watched.id}: cancellation requested`);
    } catch (error) {
      showError(error.title || "Error", error.detail || String(error));
      if (current === watched && !watched.ended) cancelButton.disabled = false;
    }
  }

  // Approve or reject: deliver the input the request waits for, as {approved, by}.
  async function sendInput(approved) {
    const watched = current;
    if (!watched || watched.ended || !watched.waiting) return;
    clearError();
    enableDecision(false);
    try {
      const value = { approved, by: "the ackflow page" };
      await callApi("POST", `/v1/requests/${encodeURIComponent(watched.id)}/input`, { name: watched.waiting, value });
      if (current === watched) waitingBox.hidden = true;
    } catch (error) {
      showError(error.title || "Error", error.detail || String(error));
      enableDecision(true);
    }
  }

  function describeOptions(options) {
    if (!options || typeof options !== "object") return "";
    const parts = [];
    if (typeof options.start_to_close_seconds === "number") parts.push(`timeout ${options.start_to_close_seconds} s`);
    if (typeof options.max_attempts === "number") parts.push(`${options.max_attempts} attempts`);
    if (typeof options.workflow === "string") parts.push(`workflow ${options.workflow}`);
    return parts.join(", ");
  }

  // The kinds the workers registered, offered in the Kind field.
  async function loadKinds() {
    const listing = await callApi("GET", "/v1/kinds");
    const options = (listing && Array.isArray(listing.items) ? listing.items : []).map((item) => {
      const option = document.createElement("option");
      option.value = String(item.kind);
      option.label = describeOptions(item.options);
      return option;
    });
    kinds.replaceChildren(...options);
  }

  function upsertRecent(state) {
    if (!state || typeof state.id !== "string") return;
    let row = recent.querySelector(`tr[data-id="${CSS.escape(state.id)}"]`);
    if (row && Number(row.dataset.version) >= state.version) return; // an older or repeated event
    if (!row) {
      row = document.createElement("tr");
      row.dataset.id = state.id;
      for (let i = 0; i < 4; i += 1) row.append(document.createElement("td"));
      recent.prepend(row);
      while (recent.rows.length > RECENT_ROWS) recent.deleteRow(-1);
    }
    row.dataset.version = String(state.version);
    row.dataset.status = String(state.status);
    const [id, kind, status, updated] = row.cells;
    id.textContent = state.id.slice(0, 8);
    id.title = state.id;
    kind.textContent = String(state.kind);
    const percent = state.progress && typeof state.progress.fraction === "number"
      && !TERMINAL.has(state.status) ? ` ${Math.round(state.progress.fraction * 100)} %` : "";
    status.textContent = `${state.waiting ? "WAITING" : state.status}${percent}`;
    updated.replaceChildren(timeOf(state));
  }

  // One "event: / id: / data:" block of an SSE stream (WHATWG rules, the fields this API sends).
  function parseBlock(block) {
    const event = { id: null, data: [] };
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") event.id = value;
      else if (field === "data") event.data.push(value);
    }
    return event;
  }

  // Follow GET /v1/events with the key, resuming after the last event seen, until aborted. Once the
  // first connection is open, `opened` lists what came before it (by version, a row takes the newest).
  async function followTenant(controller, opened) {
    let lastEventId = null;
    while (!controller.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${apiKey.value.trim()}`, Accept: "text/event-stream" };
        if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
        const response = await fetch("/v1/events", { headers, signal: controller.signal, cache: "no-store", credentials: "omit" });
        if (response.status === 401 || response.status === 403) return; // a wrong key: retrying will not help
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        if (lastEventId === null) await opened();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
          buffer = blocks.pop();
          for (const block of blocks) {
            const event = parseBlock(block);
            if (event.id !== null) lastEventId = event.id;
            if (event.data.length === 0) continue;
            try {
              upsertRecent(JSON.parse(event.data.join("\n")));
            } catch {
              // not JSON: not an event of this API
            }
          }
        }
      } catch {
        if (controller.signal.aborted) return;
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  // With a (new) key: offer its tenant's kinds and list its recent requests, live.
  async function useKey() {
    if (tenantStream) tenantStream.abort();
    tenantStream = null;
    recent.replaceChildren();
    if (!apiKey.value.trim()) return;
    const controller = new AbortController();
    tenantStream = controller;
    try {
      await loadKinds();
    } catch {
      if (tenantStream === controller) tenantStream = null; // a wrong key: submitting shows why
      return;
    }
    followTenant(controller, async () => {
      const page = await callApi("GET", `/v1/requests?limit=${RECENT_ROWS}`);
      if (controller.signal.aborted) return;
      for (const state of (page && Array.isArray(page.items) ? page.items : []).reverse()) upsertRecent(state);
    });
  }

  apiKey.value = remembered();
  apiKey.addEventListener("input", () => remember(apiKey.value.trim()));
  apiKey.addEventListener("change", useKey);
  form.addEventListener("submit", submit);
  cancelButton.addEventListener("click", cancel);
  $("approve").addEventListener("click", () => sendInput(true));
  $("reject").addEventListener("click", () => sendInput(false));
  useKey();
})();
