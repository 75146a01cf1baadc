"""One progress bar per phase while a job runs: pool, the phase's own steps, epoch, loss,
elapsed, cost so far and ETA, in at most 80 columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, JustifyMethod, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

from orchestrator.lifecycle import TERMINAL_JOB, PhaseStatus

EPOCH_HELP = "epoch (1-based: the job's epoch in progress / its total epochs)"
STATUS_WORDS = {
    PhaseStatus.SUCCEEDED: "done",
    PhaseStatus.QUEUED: "queued",
}


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _short(value: float, width: int = 6) -> str:
    """Four decimals while they fit the column, fewer as the value grows."""
    for decimals in (4, 3, 2, 1):
        text = f"{value:.{decimals}f}"
        if len(text) <= width:
            return text
    return f"{value:.0f}"


def epoch_range(job: dict[str, Any], phase: str) -> tuple[int, int]:
    """The epochs a phase trains, by the rule of orchestrator.plan.epoch_range: warmup
    [0, warmup_epochs), final [warmup_epochs, total_epochs); others none."""
    hp = job.get("hyperparameters") or {}
    total = int(hp.get("total_epochs") or 0)
    warmup = min(int(hp.get("warmup_epochs") or 0), total)
    return {"warmup": (0, warmup), "final": (warmup, total)}.get(phase, (0, 0))


@dataclass
class PhaseTrace:
    """What the metrics events of a phase's current attempt told: its loss and its pace."""

    attempt: int = 0
    loss: float | None = None
    first: tuple[datetime, int] | None = None
    last: tuple[datetime, int] | None = None

    def seconds_per_step(self) -> float | None:
        if self.first is None or self.last is None or self.last[1] <= self.first[1]:
            return None
        return (self.last[0] - self.first[0]).total_seconds() / (self.last[1] - self.first[1])


@dataclass
class Board:
    """The phases' rows, from the job as last read and the events seen so far."""

    traces: dict[str, PhaseTrace] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        phase = event.get("phase")
        if event.get("type") != "metrics" or not phase:
            return
        trace = self.traces.setdefault(phase, PhaseTrace())
        attempt = int(event.get("attempt") or 0)
        if attempt != trace.attempt:  # a new attempt's pace starts over
            trace.attempt, trace.first = attempt, None
        data = event.get("data") or {}
        if isinstance(data.get("loss"), int | float):
            trace.loss = float(data["loss"])
        if isinstance(data.get("step"), int) and event.get("created_at"):
            sample = (_moment(event["created_at"]), data["step"])
            trace.first = trace.first or sample
            trace.last = sample

    def rows(self, job: dict[str, Any], now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        return [self._row(job, phase, now) for phase in job["phases"]]

    def _row(self, job: dict[str, Any], phase: dict[str, Any], now: datetime) -> dict[str, Any]:
        progress, status = phase["progress"], phase["status"]
        total_epochs = int((job.get("hyperparameters") or {}).get("total_epochs") or 0)
        start, end = epoch_range(job, phase["name"])
        per_epoch = progress["total_steps"] // total_epochs if total_epochs else 0
        own_total = (end - start) * per_epoch
        own_step = min(max(progress["step"] - start * per_epoch, 0), own_total)
        if status == PhaseStatus.SUCCEEDED:
            own_step = own_total
        trained = own_total > 0 and (own_step > 0 or status == PhaseStatus.RUNNING)
        epoch = min(progress["epoch"] + 1, end) if trained else None
        elapsed = None
        if phase.get("started_at"):
            finish = _moment(phase["finished_at"]) if phase.get("finished_at") else now
            elapsed = (finish - _moment(phase["started_at"])).total_seconds()
        trace = self.traces.get(phase["name"], PhaseTrace())
        return {
            "phase": phase["name"],
            "pool": phase["pool"],
            "status": status,
            "own_step": own_step,
            "own_total": own_total,
            "steps": f"{own_step}/{own_total}" if own_total else "-",
            "epoch": f"{epoch}/{total_epochs}" if epoch else "-",
            "loss": _short(trace.loss) if trace.loss is not None else "-",
            "elapsed": clock(elapsed) if elapsed is not None else "-",
            "cost": _short(float(phase["cost"]["amount"]), width=8),
            "eta": self._eta(phase, own_step, own_total, elapsed, trace),
        }

    @staticmethod
    def _eta(
        phase: dict[str, Any],
        own_step: int,
        own_total: int,
        elapsed: float | None,
        trace: PhaseTrace,
    ) -> str:
        status = phase["status"]
        if status != PhaseStatus.RUNNING:
            return STATUS_WORDS.get(status, str(status))
        pace = trace.seconds_per_step()
        if pace is None and own_step and elapsed:
            pace = elapsed / own_step  # startup included: a little long
        if pace is not None and own_total:
            return clock((own_total - own_step) * pace)
        planned = (phase.get("estimate") or {}).get("total_seconds")
        if planned is not None and elapsed is not None:
            return "~" + clock(float(planned) - elapsed)
        return "?"


def _column(header: str, width: int, justify: JustifyMethod) -> Column:
    return Column(
        header=header,
        min_width=len(header),
        max_width=width,
        no_wrap=True,
        overflow="ellipsis",
        justify=justify,
    )


class PhaseProgress(Progress):
    """rich Progress with a header row naming each column; 80 columns at most."""

    def __init__(self, currency: str, **kwargs: Any):
        fields: tuple[tuple[str, str, int, JustifyMethod], ...] = (
            ("phase", "phase", 10, "left"),
            ("pool", "pool", 8, "left"),
            ("steps", "step", 11, "right"),
            ("epoch", "epoch", 5, "right"),
            ("loss", "loss", 6, "right"),
            ("elapsed", "elapsed", 7, "right"),
            ("cost", f"cost {currency}"[:8], 8, "right"),
            ("eta", "eta", 9, "right"),
        )
        columns: list[ProgressColumn] = [
            TextColumn(
                f"{{task.fields[{name}]}}", markup=False, justify=j, table_column=_column(h, w, j)
            )
            for name, h, w, j in fields
        ]
        columns.insert(2, BarColumn(bar_width=8, table_column=Column(header="", width=8)))
        # Set before Progress starts its Live, which renders at once.
        self.tasks_by_phase: dict[str, TaskID] = {}
        self.title: RenderableType = ""
        super().__init__(*columns, **kwargs)

    def make_tasks_table(self, tasks: Any) -> Table:
        table = super().make_tasks_table(tasks)
        table.show_header = True
        table.header_style = "bold"
        return table

    def get_renderable(self) -> RenderableType:
        return Group(self.title, super().get_renderable())

    def show(self, job: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        cost = job["cost"]
        so_far = "" if job["status"] in TERMINAL_JOB else " so far"
        self.title = Text(
            f"job {job['id']} {job['status']}, "
            f"cost{so_far} {float(cost['amount']):.4f} {cost['currency']}",
            no_wrap=True,
            overflow="ellipsis",
        )
        for row in rows:
            total: float | None
            if row["own_total"]:
                total, completed = row["own_total"], row["own_step"]
            elif row["status"] == PhaseStatus.RUNNING:
                total, completed = None, 0  # a phase without steps (preprocess) pulses
            else:
                total, completed = 1, int(row["status"] == PhaseStatus.SUCCEEDED)
            fields = {k: v for k, v in row.items() if k not in ("own_step", "own_total")}
            task = self.tasks_by_phase.get(row["phase"])
            if task is None:
                task = self.add_task(row["phase"], total=total, completed=completed, **fields)
                self.tasks_by_phase[row["phase"]] = task
            self.update(task, completed=completed, **fields)
            with self._lock:
                self._tasks[task].total = total  # update() cannot set it back to None
