"""`replay --plot`: each job's objective curve, the medians it was compared with, and its stop.

matplotlib is an optional extra (`early-stopping-sidecar[plot]`); it is imported only here, only
when a plot is asked for, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.config import Config, EarlyStoppingType
from sidecar.errors import SidecarError
from sidecar.replay import JobTrace

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLUMNS = 3
CURVE, AFTER, MEDIAN, STOP = "#1f77b4", "#9aa5b1", "#ff7f0e", "#d62728"


def require_matplotlib() -> None:
    """Fail fast, before any work, when the plot extra is not installed (exit 2)."""
    from sidecar.extras import require

    require("plot", what="--plot")
    import matplotlib

    matplotlib.use("Agg")


def write_plot(traces: Sequence[JobTrace], config: Config, path: Path) -> None:
    """One PNG: a panel per job, in launch order, sharing both axes."""
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n = max(1, len(traces))
    columns = min(COLUMNS, n)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(4.2 * columns, 2.6 * rows + 1.1), dpi=110, layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    would = config.early_stopping.type is EarlyStoppingType.OFF
    for i, (ax, job) in enumerate(zip(axes, traces, strict=False)):
        _panel(ax, job, would=would)
        if i % columns == 0:
            ax.set_ylabel(config.objective.metric)
        if i >= len(traces) - columns:
            ax.set_xlabel("epoch")
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[len(traces) :]:
        ax.set_visible(False)
    es = config.early_stopping
    figure.suptitle(
        f"{config.tuning_job}: {config.objective.metric} ({config.objective.type.value}), "
        f"rule {es.rule} (min_jobs {es.min_jobs}, start_epoch {es.start_epoch}), "
        f"early stopping {es.type.value}",
        fontsize=10,
    )
    handles = [
        Line2D([], [], color=CURVE, marker=".", label="objective"),
        Line2D([], [], color=AFTER, linestyle=":", label="logged after the stop (would not run)"),
        Line2D(
            [],
            [],
            color=MEDIAN,
            linestyle="--",
            label="median the rule compared with (earlier jobs' running averages)",
        ),
        Line2D(
            [],
            [],
            color=STOP,
            marker="X",
            linestyle="",
            markersize=9,
            label="would have stopped here" if would else "stopped here",
        ),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise SidecarError(f"cannot write plot {str(path)!r}: {exc.strerror or exc}") from None


def _wrap(text: str, width: int = 60) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _panel(ax: Axes, job: JobTrace, *, would: bool) -> None:
    """One job: its curve (dotted past the stop), the medians, and the stop marker."""
    stop = job.stop.epoch if job.stop is not None else None
    epochs = sorted(job.values)
    shown = [e for e in epochs if stop is None or e <= stop]
    after = [e for e in epochs if stop is not None and e >= stop]
    ax.plot(shown, [job.values[e] for e in shown], color=CURVE, marker=".", markersize=4)
    if len(after) > 1:
        ax.plot(after, [job.values[e] for e in after], color=AFTER, linestyle=":")
    medians = sorted(job.medians)
    if medians:
        ax.plot(
            medians,
            [job.medians[e] for e in medians],
            color=MEDIAN,
            linestyle="--",
            marker=".",
            markersize=3,
        )
    status = job.status
    if job.stop is not None:
        value = job.stop.value
        y = value if math.isfinite(value) else job.stop.median
        ax.plot([job.stop.epoch], [y], color=STOP, marker="X", markersize=9, linestyle="")
        note = f"{value:g}" if not math.isfinite(value) else ""
        if note:
            ax.annotate(note, (job.stop.epoch, y), textcoords="offset points", xytext=(6, 4))
        if would:
            status = f"{status}; would stop at {job.stop.epoch}"
    diverged = [e for e in epochs if not math.isfinite(job.values[e])]
    if diverged:  # not drawn: say where the curve stops
        first = diverged[0]
        ax.text(
            0.98,
            0.95,
            f"{job.values[first]:g} from epoch {first}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color=STOP,
        )
    ax.set_title(f"{job.order}. {job.job} ({status})", fontsize=9)
    if job.why and job.stop is None:  # why the rule let it run, under its curve
        ax.text(
            0.02,
            0.03,
            _wrap(f"not stopped: {job.why.split(' (last:')[0]}"),
            transform=ax.transAxes,
            ha="left",
            va="bottom",
            fontsize=7,
            color="#555555",
        )
    ax.grid(True, alpha=0.3)
