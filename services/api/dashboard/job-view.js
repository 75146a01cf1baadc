// One job: its phases, curves, timeline and evaluation, kept live without reloading.

import { ApiError, getJson, send } from "./api.js";
import { lineChart, metricSeries, stepDomain } from "./charts.js";
import { h, replace } from "./dom.js";
import { evaluationPanel } from "./evaluation.js";
import { money, shortId, TERMINAL, when } from "./format.js";
import { follow } from "./live.js";
import { phaseCards, tickElapsed } from "./phases.js";
import { timeline } from "./timeline.js";

// Events after which the job's JSON (statuses, costs, attempts) has changed.
const CHANGES_JOB = /^(phase_|job_|cancel_requested|budget_changed|lease_expired)/;
const COST_REFRESH_MS = 10000;

export function showJob(view, jobId, { signal, notify, onError }) {
  const state = { job: null, events: [], evaluation: null, evaluationFor: null, live: null, mode: "" };
  const path = `v1/jobs/${encodeURIComponent(jobId)}`;
  const parts = {
    header: h("div", { id: "job-header" }),
    phases: h("div"),
    charts: h("section", { id: "curves", class: "charts" }),
    timeline: h("div"),
    evaluation: h("div"),
  };
  replace(view, h("p", {}, h("a", { href: "#/jobs", text: "← Jobs" })), Object.values(parts));

  const act = (what) => async (...args) => {
    try {
      await what(...args);
    } catch (error) {
      onError(error);
    }
  };
  const actions = {
    cancel: act(async () => {
      if (!confirm(`Cancel job ${shortId(jobId)}? A running phase stops at its next step.`)) return;
      showJobJson(await (await send(`${path}/cancel`, { method: "POST" })).json());
      notify("Cancel requested.");
    }),
    requeue: act(async (phase) => {
      const job = await (await send(`${path}/phases/${phase}/requeue`, { method: "POST" })).json();
      showJobJson(job);
      notify(`Phase ${phase} queued again.`);
    }),
    download: act(async () => {
      const blob = await (await send(`${path}/adapter`)).blob();
      const link = h("a", { href: URL.createObjectURL(blob), download: `relaytune-${jobId}-adapter.zip` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    }),
  };

  let shown = "";
  function showJobJson(job) {
    state.job = job;
    // Redrawn only when something changed: a button is not replaced under the pointer.
    const now = JSON.stringify(job);
    if (now !== shown) {
      shown = now;
      replace(parts.header, header(job, state.mode, actions));
      replace(parts.phases, phaseCards(job, { onRequeue: actions.requeue }));
    }
    loadEvaluation();
    followIfLive();
  }

  function showEvents() {
    const xDomain = stepDomain(state.events);
    replace(parts.charts,
      lineChart({ id: "loss-chart", title: "Training loss", series: metricSeries(state.events, "loss"), xDomain }),
      lineChart({ id: "lr-chart", title: "Learning rate", series: metricSeries(state.events, "lr"), xDomain }));
    replace(parts.timeline, timeline(state.events));
  }

  let refreshing = null;
  const refresh = () => {
    refreshing ??= getJson(path, { signal })
      .then(showJobJson, (error) => { if (!signal.aborted) onError(error); })
      .finally(() => { refreshing = null; });
    return refreshing;
  };

  function onEvent(event) {
    // Kept in id order: a late event goes where it belongs.
    let at = state.events.length;
    while (at > 0 && state.events[at - 1].id > event.id) at -= 1;
    state.events.splice(at, 0, event);
    const phase = state.job?.phases.find((p) => p.name === event.phase);
    if (event.type === "metrics" && phase && event.data.step >= phase.progress.step) {
      // The step moves on every report: the event says where, no request needed (a late
      // report never moves it back; a phase run again is reloaded on its phase events).
      phase.progress = { step: event.data.step, total_steps: event.data.total_steps, epoch: event.data.epoch };
      phasesMoved = true;
    }
    if (CHANGES_JOB.test(event.type)) refresh();
    scheduleDraw();
  }

  // A backlog arrives as hundreds of events at once: draw them once per frame.
  let drawPending = false;
  let phasesMoved = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      showEvents();
      if (phasesMoved && state.job) {
        shown = "";
        replace(parts.phases, phaseCards(state.job, { onRequeue: actions.requeue }));
      }
      phasesMoved = false;
    });
  }

  function followIfLive() {
    if (state.live) return;
    const lastId = state.events.length ? state.events[state.events.length - 1].id : 0;
    if (lastId && TERMINAL.has(state.job.status)) return; // nothing more will come
    state.live = follow(jobId, {
      after: lastId,
      signal,
      onEvent,
      isFinished: () => TERMINAL.has(state.job.status),
      onMode: showMode,
      onError: (error) => { if (error instanceof ApiError) onError(error); },
    }).finally(() => {
      // Ended with the job, or on an error already shown; a requeue follows it again.
      state.live = null;
      showMode("");
    });
  }

  function showMode(mode) {
    state.mode = mode;
    const badge = parts.header.querySelector("#live-mode");
    if (badge) badge.textContent = liveLabel(mode);
  }

  async function loadEvaluation() {
    const final = state.job.phases.find((p) => p.name === "final");
    const ready = final && final.status === "succeeded";
    const version = ready ? `${final.attempt}:${final.finished_at}` : null;
    if (version === state.evaluationFor) return;
    state.evaluationFor = version;
    state.evaluation = null;
    if (ready) {
      try {
        state.evaluation = await getJson(`${path}/evaluation`, { signal });
      } catch (error) {
        // 409: the export is not there yet; anything else is worth saying.
        if (!(error instanceof ApiError && error.status === 409) && !signal.aborted) onError(error);
      }
    }
    replace(parts.evaluation, evaluationPanel(state.evaluation));
  }

  replace(parts.evaluation, evaluationPanel(null));
  showEvents();
  refresh();
  const ticker = setInterval(() => state.job && tickElapsed(parts.phases, state.job), 1000);
  const costs = setInterval(() => state.job && !TERMINAL.has(state.job.status) && refresh(), COST_REFRESH_MS);
  signal.addEventListener("abort", () => { clearInterval(ticker); clearInterval(costs); }, { once: true });
}

function liveLabel(mode) {
  return mode === "stream" ? "live (stream)" : mode === "polling" ? "live (polling every 2 s)" : "";
}

function header(job, mode, actions) {
  const final = job.phases.find((p) => p.name === "final");
  const hasAdapter = job.status === "succeeded" || (final && final.status === "succeeded");
  return h("div", { class: "job-header" },
    h("h1", {}, "Job ", h("span", { class: "mono", text: job.id })),
    h("p", { class: "facts" },
      h("span", { id: "job-status", class: `status status-${job.status}`, text: job.status }),
      h("span", {}, "model ", h("span", { class: "mono", text: job.base_model })),
      h("span", { text: `created ${when(job.created_at)}` }),
      h("span", {}, "cost so far ", h("strong", { id: "job-cost", text: money(job.cost) })),
      job.max_cost && h("span", { text: `budget ${money(job.max_cost)}` }),
      job.plan?.estimated_cost && h("span", { text: `estimate ${money(job.plan.estimated_cost)}` }),
      h("span", { id: "live-mode", class: "muted", text: liveLabel(mode) }),
    ),
    job.error && h("p", { class: "error", text: `${job.error.code}: ${job.error.message}` }),
    h("p", { class: "actions" },
      h("button", {
        id: "cancel-job", type: "button", class: "danger", onclick: actions.cancel,
        disabled: TERMINAL.has(job.status) || job.status === "cancelling", text: "Cancel job",
      }),
      h("button", {
        id: "download-adapter", type: "button", onclick: actions.download, disabled: !hasAdapter,
        title: hasAdapter ? "The LoRA adapter in PEFT format, as a zip" : "Ready when the final phase has succeeded",
        text: "Download adapter",
      }),
    ),
  );
}
