// The ackflow page: POST /v1/requests with the API key, then follow the request's statuses over
// Server-Sent Events through its capability URL (links.events), which needs no key.
// Everything from the server is rendered with textContent, never as markup.
"use strict";

(() => {
  const EVENT_TYPES = ["request.accepted", "request.processing", "request.done", "request.failed", "request.cancelled"];
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

  let current = null; // the request being watched: {id, source, version, ended}

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

  function onStatus(watched, event) {
    if (current !== watched || watched.ended) return;
    let state;
    try {
      state = JSON.parse(event.data);
    } catch {
      return;
    }
    if (typeof state.version === "number" && state.version <= watched.version) return; // a late duplicate
    watched.version = state.version;
    const item = document.createElement("li");
    item.dataset.status = state.status;
    item.dataset.event = event.type;
    item.textContent = state.status;
    statuses.append(item);
    announce(`Request ${watched.id}: ${state.status}`);
    if (TERMINAL.has(state.status)) {
      showOutcome(state);
      stopWatching();
    }
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
    const watched = { id: accepted.id, source: null, version: 0, ended: false };
    current = watched;
    requestId.textContent = accepted.id;
    statuses.replaceChildren();
    outcome.textContent = "";
    delete outcome.dataset.status;
    announce(`Request ${accepted.id} accepted`);
    watched.source = new EventSource(accepted.links.events);
    for (const type of EVENT_TYPES) {
      watched.source.addEventListener(type, (event) => onStatus(watched, event));
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

  apiKey.value = remembered();
  apiKey.addEventListener("input", () => remember(apiKey.value.trim()));
  form.addEventListener("submit", submit);
  cancelButton.addEventListener("click", cancel);
})();
