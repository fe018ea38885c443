// Shared by every dashboard page: the API key, calls to /v1, the event stream, charts, formatting.
"use strict";

const KEY_STORAGE = "backprop.apiKey"; // sessionStorage: kept for this browser tab only
const PALETTE = ["#2f6fde", "#e4572e", "#17a398", "#9b5de5", "#f2a541", "#d7263d", "#3d5a80", "#6a994e"];

class ApiError extends Error {
  constructor(status, message) { super(`${status}: ${message}`); this.status = status; this.detail = message; }
}

// ------------------------------------------------------------------ the API key

let keyPrompt = null; // one prompt at a time, shared by every request that met a 401

function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason || "";
  input.value = "";
  keyPrompt = new Promise((resolve) => {
    dialog.querySelector("form").onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
      dialog.close();
      keyPrompt = null;
      resolve();
    };
  });
  dialog.showModal();
  input.focus();
  return keyPrompt;
}

function forgetKey() { sessionStorage.removeItem(KEY_STORAGE); location.reload(); }

// fetch a /v1 path with the key; a 401 asks for a key and tries again; other errors throw ApiError
async function api(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}) };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401) {
      await askForKey(await detailOf(response));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    return response;
  }
}

async function detailOf(response) {
  try {
    const body = await response.json();
    if (Array.isArray(body.detail)) return body.detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return body.detail || response.statusText;
  } catch { return response.statusText; }
}

const getJSON = async (path) => (await api(path)).json();

// ------------------------------------------------------------------ the event stream (fetch, so the key goes in a header)

// Calls onEvent(name, data, id) for each event; reconnects with Last-Event-ID; resolves after `end`.
async function followEvents(jobId, lastEpoch, onEvent, signal) {
  let retry = 1000;
  for (;;) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEpoch != null) headers["Last-Event-ID"] = String(lastEpoch);
      const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "", name = "", data = [], id = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (data.length) {
              const payload = JSON.parse(data.join("\n"));
              if (name === "epoch") lastEpoch = Number(id);
              onEvent(name || "message", payload, id);
              if (name === "end") { reader.cancel(); return; }
            }
            name = ""; data = [];
            continue;
          }
          if (line.startsWith(":")) continue;
          const at = line.indexOf(":");
          const field = at < 0 ? line : line.slice(0, at);
          const val = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
          if (field === "event") name = val;
          else if (field === "data") data.push(val);
          else if (field === "id") id = val;
          else if (field === "retry" && /^\d+$/.test(val)) retry = Number(val);
        }
      }
    } catch (error) {
      if (signal && signal.aborted) return;
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}

// ------------------------------------------------------------------ charts (uPlot)

function lineChart(element, title, labels, colors, yLabel) {
  const series = [{ label: "epoch" }].concat(labels.map((label, i) => ({
    label, stroke: colors[i], width: 2, spanGaps: true, points: { show: false },
    value: (u, v) => (v == null ? "–" : Number(v).toPrecision(4)),
  })));
  const chart = new uPlot({
    title, width: Math.max(320, element.clientWidth - 16), height: 280, series,
    scales: { x: { time: false } },
    axes: [{ label: "epoch" }, { label: yLabel, size: 60 }],
    legend: { live: true },
  }, [[], ...labels.map(() => [])], element);
  new ResizeObserver(() => chart.setSize({ width: Math.max(320, element.clientWidth - 16), height: 280 })).observe(element);
  return chart;
}

// Replace a chart's data; the container's data-points says how many epochs it draws (for tests and tools).
function setChartData(element, chart, data) {
  chart.setData(data);
  element.dataset.points = String(data[0].length);
  element.dataset.series = String(data.length - 1);
}

// ------------------------------------------------------------------ formatting

const fmt = (v, digits = 4) => (v == null ? "–" : Number(v).toPrecision(digits));
const short = (id) => id.slice(0, 8);
const jobLabel = (job) => (job.name ? `${job.name} (${short(job.id)})` : short(job.id));
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function bestMetric(job) {
  const best = job.best_metrics;
  if (!best) return "–";
  if (best.val_accuracy != null) return `val acc ${fmt(best.val_accuracy)}`;
  if (best.val_loss != null) return `val loss ${fmt(best.val_loss)}`;
  return `loss ${fmt(best.train_loss)}`;
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status;
  return span;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function showError(error) {
  const box = document.getElementById("page-error");
  box.hidden = false;
  box.textContent = String(error.message || error);
}
