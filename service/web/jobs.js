// The jobs table: refreshed every 2 s; tick 2 to 8 jobs to compare them.
"use strict";

const REFRESH_MS = 2000;
const selected = new Set();

function progressCell(job) {
  const { epoch, epochs } = job.progress;
  const bar = el("span", { class: "bar" }, el("span"));
  bar.firstChild.style.width = `${Math.round((100 * epoch) / Math.max(epochs, 1))}%`;
  return el("td", {}, bar, `${epoch}/${epochs}`);
}

function row(job) {
  const box = el("input", { type: "checkbox", checked: selected.has(job.id) });
  box.onchange = () => { box.checked ? selected.add(job.id) : selected.delete(job.id); updateCompare(); };
  return el("tr", { "data-job-id": job.id, "data-status": job.status },
    el("td", {}, box),
    el("td", {}, el("a", { href: `/jobs/${job.id}` }, job.name || "(unnamed)")),
    el("td", { class: "mono" }, short(job.id)),
    el("td", {}, badge(job.status)),
    progressCell(job),
    el("td", {}, bestMetric(job)),
    el("td", { class: "mono" }, job.dataset_id),
    el("td", { class: "muted" }, new Date(job.created_at).toLocaleString()));
}

function updateCompare() {
  const button = document.getElementById("compare");
  button.disabled = selected.size < 2 || selected.size > 8;
  document.getElementById("selection").textContent =
    selected.size ? `${selected.size} selected (2 to 8)` : "select 2 to 8 jobs to compare their validation curves";
}

async function refresh() {
  try {
    const page = await getJSON("/v1/jobs?limit=100");
    const body = document.querySelector("#jobs tbody");
    body.replaceChildren(...page.items.map(row));
    document.getElementById("empty").hidden = page.items.length > 0;
    document.getElementById("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("page-error").hidden = true;
  } catch (error) {
    showError(error);
  }
}

document.getElementById("compare").onclick = () => {
  location.href = `/compare?ids=${[...selected].join(",")}`;
};
refresh();
setInterval(refresh, REFRESH_MS);
