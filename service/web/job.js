// One job: loss and accuracy (or R²) curves that extend live from the event stream, spec, outcome, download.
"use strict";

const HISTORY_POINTS = 1000; // longer histories are cut down by the server (?points=)
const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
let job = null;
const data = { epoch: [], train_loss: [], val_loss: [], train_accuracy: [], val_accuracy: [], val_r2: [], val_mae: [] };
let lossChart = null, metricChart = null, metricKeys = null;

function chooseMetricChart() {
  // classification: accuracies; regression: R² (and MAE)
  if (data.train_accuracy.some((v) => v != null) || data.val_accuracy.some((v) => v != null)) {
    return { keys: ["train_accuracy", "val_accuracy"], labels: ["train accuracy", "validation accuracy"], title: "Accuracy" };
  }
  return { keys: ["val_r2", "val_mae"], labels: ["validation R²", "validation MAE"], title: "R² and MAE" };
}

function draw() {
  const lossElement = document.getElementById("loss-chart");
  const metricElement = document.getElementById("metric-chart");
  if (!lossChart) lossChart = lineChart(lossElement, "Loss", ["train loss", "validation loss"], PALETTE, "loss");
  setChartData(lossElement, lossChart, [data.epoch, data.train_loss, data.val_loss]);
  if (!metricChart && data.epoch.length) {
    metricKeys = chooseMetricChart();
    metricChart = lineChart(metricElement, metricKeys.title, metricKeys.labels, PALETTE, metricKeys.title.toLowerCase());
  }
  if (metricChart) setChartData(metricElement, metricChart, [data.epoch, ...metricKeys.keys.map((k) => data[k])]);
}

function addEpoch(row) {
  const last = data.epoch[data.epoch.length - 1];
  if (last != null && row.epoch <= last) return; // a resumed job re-records epochs already drawn
  for (const key of Object.keys(data)) data[key].push(key === "epoch" ? row.epoch : row[key]);
}

function showProgress() {
  const cancelling = job.cancel_requested && !TERMINAL.has(job.status) ? " · cancelling" : "";
  document.getElementById("job-progress").textContent = `epoch ${job.progress.epoch}/${job.progress.epochs}${cancelling}`;
}

function showJob(next) {
  job = next;
  document.title = `${job.name || short(job.id)} · Backprop Lab`;
  document.getElementById("job-title").textContent = job.name || "(unnamed job)";
  document.getElementById("job-id").textContent = job.id;
  document.getElementById("job-status").replaceChildren(badge(job.status));
  showProgress();
  document.getElementById("download").disabled = job.status !== "succeeded";
  document.getElementById("cancel").hidden = TERMINAL.has(job.status);
  const facts = [
    ["status", job.status], ["stop reason", job.stop_reason || "–"], ["error", job.error || "–"],
    ["best epoch", job.best_epoch ?? "–"], ["best", bestMetric(job)],
    ["best val loss", fmt(job.best_metrics && job.best_metrics.val_loss)],
    ["dataset", job.dataset_id], ["attempt", job.attempt],
    ["created", new Date(job.created_at).toLocaleString()],
    ["started", job.started_at ? new Date(job.started_at).toLocaleString() : "–"],
    ["finished", job.finished_at ? new Date(job.finished_at).toLocaleString() : "–"],
  ];
  document.getElementById("outcome").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  document.getElementById("spec").textContent = JSON.stringify(job.spec, null, 2);
}

async function download() {
  try {
    const response = await api(`/v1/jobs/${jobId}/model`);
    const expected = response.headers.get("X-Model-SHA256");
    const bytes = await response.arrayBuffer();
    if (crypto.subtle) {
      const digest = [...new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))]
        .map((b) => b.toString(16).padStart(2, "0")).join("");
      if (expected && digest !== expected) throw new Error(`the download's sha256 ${digest} is not the server's ${expected}`);
    }
    const link = el("a", { href: URL.createObjectURL(new Blob([bytes])), download: `model-${jobId}.npz` });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) { showError(error); }
}

async function main() {
  document.getElementById("download").onclick = download;
  document.getElementById("cancel").onclick = async () => {
    try { showJob(await (await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" })).json()); } catch (e) { showError(e); }
  };
  try {
    showJob(await getJSON(`/v1/jobs/${jobId}`));
    const history = await getJSON(`/v1/jobs/${jobId}/history?points=${HISTORY_POINTS}`);
    history.epochs.forEach(addEpoch);
    draw();
    if (TERMINAL.has(job.status)) return;
    const live = document.getElementById("live");
    live.textContent = "live";
    const lastEpoch = data.epoch.length ? data.epoch[data.epoch.length - 1] : null;
    let pending = false;
    await followEvents(jobId, lastEpoch, (name, payload) => {
      if (name === "epoch") {
        addEpoch(payload);
        job.progress.epoch = payload.epoch;
        showProgress();
        if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
      } else {
        showJob(payload);
      }
    });
    draw();
    live.textContent = `ended · ${job.status}`;
  } catch (error) {
    showError(error);
  }
}
main();
