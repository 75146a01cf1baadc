// The job's events, newest first; metrics events are drawn as curves instead of listed.

import { h } from "./dom.js";
import { clock } from "./format.js";

const SHOWN = 200;
const HIDDEN_FIELDS = new Set(["worker_id"]);

function summary(event) {
  return Object.entries(event.data || {})
    .filter(([key, value]) => !HIDDEN_FIELDS.has(key) && value !== null && typeof value !== "object")
    .map(([key, value]) => `${key}=${value}`)
    .join("  ");
}

export function timeline(events) {
  const listed = events.filter((e) => e.type !== "metrics");
  const metrics = events.length - listed.length;
  return h("section", { id: "timeline" },
    h("h2", {}, "Timeline ", h("span", { class: "muted", text: metrics ? `(${metrics} metrics reports in the curves)` : "" })),
    h("ol", { class: "events" }, listed.slice(-SHOWN).reverse().map((e) => h("li", {
      class: `event event-${e.type}`, "data-event-id": e.id, "data-type": e.type,
    },
      h("time", { datetime: e.created_at, text: clock(e.created_at) }),
      h("span", { class: "type", text: e.type }),
      e.phase && h("span", { class: "mono", text: `${e.phase}${e.attempt ? ` #${e.attempt}` : ""}` }),
      h("span", { class: "data", text: summary(e) }),
    ))),
  );
}
