// The relay's phases as bars: pool, GPU, status, progress, time, cost and the estimate.

import { h } from "./dom.js";
import { duration, money } from "./format.js";

const REQUEUEABLE = new Set(["succeeded", "failed", "cancelled"]);
// What a phase without training steps (preprocess, or one not started) is doing.
const WITHOUT_STEPS = {
  pending: "waits for the previous phase",
  queued: "waiting for a worker",
  running: "working…",
  succeeded: "done",
};

// progress.step counts optimizer steps over the whole job, so a phase's share is the steps of
// its own epochs: warmup [0, warmup_epochs), final [warmup_epochs, total_epochs).
export function phaseFraction(phase, job) {
  if (phase.status === "succeeded") return 1;
  const { step, total_steps: total } = phase.progress;
  const hp = job.hyperparameters || {};
  const epochs = hp.total_epochs;
  if (!total || !epochs) return 0;
  const perEpoch = total / epochs;
  const [first, last] =
    phase.name === "warmup" ? [0, hp.warmup_epochs] :
    phase.name === "final" ? [hp.warmup_epochs, epochs] : [0, epochs];
  const span = (last - first) * perEpoch;
  if (!(span > 0)) return 0;
  return Math.min(1, Math.max(0, (step - first * perEpoch) / span));
}

function progressText(phase) {
  const { step, total_steps: total, epoch } = phase.progress;
  if (!total) return WITHOUT_STEPS[phase.status] || phase.status;
  return `step ${step} / ${total} · epoch ${epoch + 1}`;
}

export function elapsedSeconds(phase, now = Date.now()) {
  if (!phase.started_at) return null;
  const end = phase.finished_at && phase.status !== "running" ? Date.parse(phase.finished_at) : now;
  return (end - Date.parse(phase.started_at)) / 1000;
}

// Running phases' clocks move every second without rebuilding the cards (and their buttons).
export function tickElapsed(root, job) {
  for (const phase of job.phases) {
    const cell = root.querySelector(`.phase[data-phase="${phase.name}"] .elapsed`);
    if (cell) cell.textContent = duration(elapsedSeconds(phase));
  }
}

export function phaseCards(job, { onRequeue }) {
  return h("section", { id: "phases", class: "phases" }, job.phases.map((phase) => card(phase, job, onRequeue)));
}

function card(phase, job, onRequeue) {
  const fraction = phaseFraction(phase, job);
  const fill = h("div", { class: "fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  const indeterminate = phase.status === "running" && !phase.progress.total_steps;
  const estimate = phase.estimate;
  return h(
    "article",
    { class: `phase phase-${phase.status}`, "data-phase": phase.name, "data-status": phase.status },
    h("header", {},
      h("h3", { text: phase.name }),
      h("span", { class: `status status-${phase.status} phase-status`, text: phase.status }),
      phase.status_detail && h("span", { class: "detail", text: phase.status_detail.replaceAll("_", " ") }),
      phase.attempt > 1 && h("span", { class: "muted", text: `attempt ${phase.attempt}` }),
    ),
    h("p", { class: "pool" }, h("span", { class: "mono", text: phase.pool }), ` · ${phase.gpu_model}`),
    h("div", {
      class: `bar${indeterminate ? " indeterminate" : ""}`, role: "progressbar",
      "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(fraction * 100),
    }, fill),
    h("p", { class: "phase-steps", text: progressText(phase) }),
    h("dl", {},
      h("dt", { text: "Elapsed" }), h("dd", { class: "elapsed", text: duration(elapsedSeconds(phase)) }),
      h("dt", { text: "Billed" }), h("dd", { text: phase.timing ? duration(phase.timing.billed_s) : "—" }),
      h("dt", { text: "Cost so far" }), h("dd", { class: "phase-cost", text: money(phase.cost) }),
      estimate && h("dt", { text: "Estimate" }),
      estimate && h("dd", { class: "estimate", text: `${money(estimate.cost)} · ${duration(estimate.total_seconds)}` }),
    ),
    phase.error && h("p", { class: "error", text: `${phase.error.code}: ${phase.error.message}` }),
    REQUEUEABLE.has(phase.status) && h("button", {
      type: "button", class: "requeue", "data-phase": phase.name,
      title: phase.status === "succeeded" ? "Run it again from its input; the later phases follow" :
        "Continue it from its latest checkpoint; the later phases follow",
      onclick: () => onRequeue(phase.name), text: "Requeue",
    }),
  );
}
