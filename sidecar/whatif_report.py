"""`sidecar whatif`'s shell: the logs parsed once into curves, the candidates from the config,
`--grid` and `--rules`, the table, the JSON document and the plot (docs/rules.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.config import Config, EarlyStopping, parse_document, validate_config
from sidecar.errors import ConfigError, UsageError
from sidecar.formats import Format
from sidecar.parse import Extractor
from sidecar.replay import job_name_for
from sidecar.report import objective_doc, printable
from sidecar.sources.offline import FileStats, samples_by_line
from sidecar.whatif import Curve, Outcome, grid, ranking


def load_curves(config: Config, logs: Sequence[Path], fmt: Format = "auto") -> list[Curve]:
    """Each log's objective values, parsed once (as `replay` parses them)."""
    names = [job_name_for(p) for p in logs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"several logs have the same job name (file stem): {', '.join(duplicates)}"
        )
    extractor = Extractor(
        config.all_definitions(), config.epoch_config(), timeout=config.regex_timeout_seconds
    )
    metric = config.objective.metric
    curves = []
    for path, name in zip(logs, names, strict=True):
        parser = extractor.job_parser()
        stats = FileStats()
        values: list[tuple[int, float]] = []
        for samples in samples_by_line(
            path, extractor, parser, max_line_bytes=config.max_line_bytes, stats=stats, fmt=fmt
        ):
            values.extend((s.epoch, s.value) for s in samples if s.metric == metric)
        values.extend((s.epoch, s.value) for s in parser.finish(stats.counts) if s.metric == metric)
        curves.append(Curve(name, tuple(values)))
    return curves


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """`KEY=V1,V2,...` (KEY dotted under `early_stopping`), values read as YAML scalars."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw:
            raise UsageError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. min_jobs=1,3,5)")
        values = [
            parse_document(f"v: {v.strip()}", source=f"--grid {key}")["v"] for v in raw.split(",")
        ]
        out.append((key.strip(), values))
    return out


def candidates_from(
    config: Config, grid_items: Sequence[str], rules_file: Path | None
) -> list[EarlyStopping]:
    """The config's block, times every `--grid` key, plus each block of `--rules FILE`; each
    validated as the config is (a wrong one exits 2 naming it and the field)."""
    base = config.early_stopping.model_dump(mode="json", exclude_defaults=True)
    blocks = grid(base, parse_grid(grid_items))
    if rules_file is not None:
        try:
            text = rules_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--rules {str(rules_file)!r}: {exc.strerror or exc}") from None
        indented = "\n".join("  " + line for line in text.splitlines())
        listed = parse_document("rules:\n" + indented, source=f"--rules {rules_file}").get("rules")
        if not isinstance(listed, list) or not all(isinstance(b, dict) for b in listed):
            raise ConfigError(
                f"--rules {rules_file}: expected a YAML list of early_stopping blocks"
            )
        blocks.extend(listed)
    document = config.model_dump(mode="json", exclude_defaults=True)
    out = []
    for k, block in enumerate(blocks, 1):
        validated = validate_config({**document, "early_stopping": block}, source=f"candidate {k}")
        out.append(validated.early_stopping)
    return out


def document(
    config: Config,
    curves: Sequence[Curve],
    outcomes: Sequence[Outcome],
    best: int,
    order_count: int,
) -> dict[str, Any]:
    """`whatif --json`."""
    direction = config.objective.type
    top = ranking(curves, direction)[0]
    final = curves[top].final(direction)
    return {
        "tuning_job": config.tuning_job,
        "objective": objective_doc(config.objective),
        "jobs": len(curves),
        "orders": order_count,
        "best_job": curves[top].name,
        "best_final": final if math.isfinite(final) else None,
        "candidates": [o.doc() for o in outcomes],
        "recommended": best,
    }


def settings_text(block: dict[str, Any]) -> str:
    """A candidate's settings in one cell: `optuna-median: optuna.n_startup_trials 3`."""
    parts = []

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif prefix or key != "rule":
                parts.append(f"{prefix}{key} {value}")

    walk("", block)
    return f"{block.get('rule', 'sagemaker')}: " + (", ".join(parts) or "defaults")


def table(outcomes: Sequence[Outcome], best: int, reason: str) -> str:
    """The candidates, least saved first; the recommended one last, marked, with why."""
    rows = sorted(
        (i for i in range(len(outcomes)) if i != best),
        key=lambda i: (outcomes[i].saved_fraction, -outcomes[i].regret, i),
    )
    rows.append(best)
    header = [
        "",
        "#",
        "saved",
        "best kept",
        "regret",
        "top-k kept",
        "stopped",
        "epochs run",
        "settings",
    ]
    lines = []
    for i in rows:
        o = outcomes[i]
        regret = f"{o.regret:.4g}" if math.isfinite(o.regret) else "inf"
        lines.append(
            [
                "*" if i == best else "",
                str(i),
                f"{o.saved_fraction:.1%}",
                f"{o.best_kept:.0%}",
                regret,
                f"{o.top_k_kept:.2f}",
                f"{o.stopped_jobs:.2f}",
                f"{o.epochs_run:.1f}/{o.epochs_total:.0f}",
                printable(settings_text(o.early_stopping)),
            ]
        )
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    out.append(f"recommended: #{best}, because {reason}")
    return "\n".join(out)


def write_plot(outcomes: Sequence[Outcome], best: int, path: Path) -> None:
    """Saved fraction against regret, a point per candidate, the frontier, the recommended one."""
    from sidecar.plot import require_matplotlib

    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    finite = [o.regret for o in outcomes if math.isfinite(o.regret)]
    cap = max(finite) * 1.1 if finite and max(finite) > 0 else 1.0
    xs = [o.regret if math.isfinite(o.regret) else cap for o in outcomes]
    ys = [o.saved_fraction for o in outcomes]
    ax.scatter(xs, ys, color="#1f77b4", label="candidate")
    frontier, best_saved = [], -1.0
    for i in sorted(range(len(outcomes)), key=lambda i: (xs[i], -ys[i])):
        if ys[i] > best_saved:
            frontier.append(i)
            best_saved = ys[i]
    ax.plot([xs[i] for i in frontier], [ys[i] for i in frontier], color="#ff7f0e", label="frontier")
    ax.scatter(
        [xs[best]],
        [ys[best]],
        s=160,
        facecolors="none",
        edgecolors="#d62728",
        linewidths=2,
        label=f"recommended (#{best})",
    )
    for i in range(len(outcomes)):
        ax.annotate(str(i), (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("regret (best final value lost)")
    ax.set_ylabel("saved fraction of epochs")
    ax.set_title("what-if: each candidate rule")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=110, bbox_inches="tight")
