// The jobs list: newest first, refreshed while it is on screen.

import { getJson } from "./api.js";
import { h, replace } from "./dom.js";
import { money, shortId, when } from "./format.js";

const REFRESH_MS = 5000;

export function showJobs(view, { signal, onError }) {
  const body = h("tbody");
  const total = h("span", { class: "muted" });
  replace(
    view,
    h("h1", {}, "Jobs ", total),
    h(
      "table",
      { class: "jobs", id: "jobs" },
      h("thead", {}, h("tr", {}, ["Job", "Status", "Base model", "Created", "Cost so far"].map(
        (name) => h("th", { text: name })))),
      body,
    ),
  );
  const load = async () => {
    try {
      const list = await getJson("v1/jobs?limit=100", { signal });
      total.textContent = `(${list.total})`;
      replace(body, list.data.length ? list.data.map(row) : h("tr", {}, h("td", {
        colspan: 5, class: "muted", text: "No jobs yet: submit one with relaytune submit or POST /v1/jobs.",
      })));
    } catch (error) {
      if (!signal.aborted) onError(error);
    }
  };
  load();
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
}

function row(job) {
  const open = () => { location.hash = `#/jobs/${job.id}`; };
  return h(
    "tr",
    { class: "job-row", "data-job-id": job.id, tabindex: 0, onclick: open,
      onkeydown: (e) => { if (e.key === "Enter") open(); } },
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, class: "mono", text: shortId(job.id) })),
    h("td", {}, h("span", { class: `status status-${job.status}`, text: job.status })),
    h("td", { class: "mono", text: job.base_model }),
    h("td", { text: when(job.created_at) }),
    h("td", { class: "num", text: money(job.cost) }),
  );
}
