// 2 to 8 jobs' validation curves overlaid (one colour per job), from /compare?ids=a,b,...
"use strict";

const COMPARE_POINTS = 500;
const REFRESH_MS = 3000; // while one of them still trains
const ids = (new URLSearchParams(location.search).get("ids") || "").split(",").filter(Boolean);
let lossChart = null, metricChart = null;

function overlay(histories, key) {
  // one x axis: every epoch any job has; a job without that epoch has a gap (spanned)
  const epochs = [...new Set(histories.flatMap((h) => h.epochs.map((e) => e.epoch)))].sort((a, b) => a - b);
  const at = new Map(epochs.map((e, i) => [e, i]));
  return [epochs, ...histories.map((h) => {
    const values = new Array(epochs.length).fill(null);
    for (const row of h.epochs) values[at.get(row.epoch)] = row[key];
    return values;
  })];
}

function describe(job) {
  const optimizer = job.spec.optimizer;
  const layers = job.spec.model.hidden_layers.map((l) => `${l.units} ${l.activation}`).join(", ");
  return [`${optimizer.name} lr ${optimizer.learning_rate}`, layers];
}

async function refresh(first) {
  const jobs = await Promise.all(ids.map((id) => getJSON(`/v1/jobs/${encodeURIComponent(id)}`)));
  const histories = await Promise.all(ids.map((id) => getJSON(`/v1/jobs/${encodeURIComponent(id)}/history?points=${COMPARE_POINTS}`)));
  const labels = jobs.map(jobLabel);
  const classification = histories.some((h) => h.epochs.some((e) => e.val_accuracy != null));
  const metricKey = classification ? "val_accuracy" : "val_r2";
  const lossElement = document.getElementById("compare-loss");
  const metricElement = document.getElementById("compare-metric");
  if (first) {
    lossChart = lineChart(lossElement, "Validation loss", labels, PALETTE, "loss");
    metricChart = lineChart(metricElement, classification ? "Validation accuracy" : "Validation R²", labels, PALETTE,
      classification ? "accuracy" : "R²");
  }
  setChartData(lossElement, lossChart, overlay(histories, "val_loss"));
  setChartData(metricElement, metricChart, overlay(histories, metricKey));
  document.querySelector("#compared tbody").replaceChildren(...jobs.map((job, i) => {
    const swatch = el("span", { class: "bar" });
    swatch.style.width = "18px";
    swatch.style.background = PALETTE[i];
    const [optimizer, layers] = describe(job);
    return el("tr", { "data-job-id": job.id },
      el("td", {}, swatch),
      el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.name || "(unnamed)")),
      el("td", { class: "mono" }, short(job.id)), el("td", {}, badge(job.status)),
      el("td", {}, `${job.progress.epoch}/${job.progress.epochs}`), el("td", {}, bestMetric(job)),
      el("td", {}, optimizer), el("td", {}, layers));
  }));
  return jobs.some((job) => !TERMINAL.has(job.status));
}

async function main() {
  if (ids.length < 2 || ids.length > 8) {
    showError(new Error(`compare takes 2 to 8 job ids (?ids=a,b); got ${ids.length}`));
    return;
  }
  document.getElementById("compare-note").textContent = `${ids.length} jobs`;
  try {
    let running = await refresh(true);
    while (running) {
      await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      running = await refresh(false);
    }
  } catch (error) {
    showError(error);
  }
}
main();
