// The held-out evaluation: each metric before (the base model) and after (with the adapter).

import { h } from "./dom.js";
import { number } from "./format.js";

const SAMPLES_SHOWN = 5;

export function evaluationPanel(report) {
  const section = h("section", { id: "evaluation" }, h("h2", { text: "Evaluation" }));
  if (!report) {
    section.append(h("p", { class: "muted", text: "Ready when the final phase has succeeded." }));
    return section;
  }
  const metrics = Object.keys(report.adapter || {});
  section.append(
    h("p", { class: "muted", text: `${report.num_samples} held-out samples` }),
    h("table", { class: "metrics" },
      h("thead", {}, h("tr", {}, ["Metric", "Before", "After", "Change"].map((t) => h("th", { text: t })))),
      h("tbody", {}, metrics.map((m) => h("tr", { "data-metric": m },
        h("td", { text: m }),
        h("td", { class: "num", text: number(report.base?.[m]) }),
        h("td", { class: "num", text: number(report.adapter[m]) }),
        h("td", { class: "num", text: number(report.delta?.[m]) }),
      ))),
    ),
  );
  const samples = (report.samples || []).slice(0, SAMPLES_SHOWN);
  if (samples.length) {
    section.append(h("table", { class: "samples" },
      h("thead", {}, h("tr", {}, ["File", "Reference", "Before", "After"].map((t) => h("th", { text: t })))),
      h("tbody", {}, samples.map((r) => h("tr", {},
        h("td", { class: "mono", text: r.file ?? "" }),
        h("td", { text: r.reference ?? "" }),
        h("td", { text: r.base_answer ?? "" }),
        h("td", { text: r.adapter_answer ?? "" }),
      ))),
    ));
  }
  return section;
}
