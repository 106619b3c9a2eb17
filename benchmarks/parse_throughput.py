"""Parse throughput against `mtail --one_shot`, side by side on the same log (docs/design.md, "Performance targets").

    .venv/bin/python benchmarks/parse_throughput.py [--lines 3000000] [--runs 3]
        [--metric-share 0.05] [--keep DIR] [--mtail /usr/bin/mtail] [--tree DIR]

Needs the Debian package's mtail (`apt-get install -y mtail`). Target: the sidecar parses at least
5x the lines per second of mtail, both timed as whole processes, start-up included.

The log (one training job, 3,000,000 lines by default, seeded, about 350 MB) is mostly noise, as a
real one is; per 1,000 lines on average, with the default `--metric-share 0.05`:

    700  step lines     `2024-06-01 10:00:00,123 INFO trainer.py:212] epoch 12 step 3400/5000 loss 0.4821 ...`
    150  info lines     data loader, checkpoint, NCCL, warnings, ... (varied text)
    100  progress bars  `Epoch 12:  45%|████▌     | 450/1000 [00:12<00:15, 36.10it/s, loss=0.482]`
                        (UTF-8 bar characters; written with `\\n`, not redrawn with `\\r`, since
                        mtail splits on `\\n` only and would see different lines)
     30  metric lines   `epoch=12 val_loss=0.4312 val_acc=0.8800`            (2 values)
     20  XGBoost lines  `[12]\\ttrain-auc:0.91234\\tvalidation-auc:0.81234`   (2 values)

`--metric-share` sets the share of metric lines (3:2 PyTorch-style to XGBoost-style); the noise
keeps its 70:15:10 proportions. mtail's cost is per line, the sidecar's mostly per metric line (a
substring gate skips the rest), so the ratio depends on it: 0.05 (a value on every tenth line) is
a dense log; a PyTorch job that validates once per epoch prints far fewer.

The noise contains near misses (`loss`, `loss=`, `epoch`, `auc`, `validation`), so neither tool can
skip a line by looking for one common word.

Four metric definitions, the same four regexes in both tools:

    val_loss        val_loss=(NUMBER)
    val_acc         val_acc=(NUMBER)
    train:auc       train-auc:(NUMBER)
    validation:auc  validation-auc:(NUMBER)

with NUMBER = `[-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?`. The mtail program gives each metric a
gauge set to `float($value)` and a counter of the values seen.

Commands timed (wall clock, each a fresh process; runs alternate between the tools):

- mtail:   `mtail --one_shot --one_shot_format json --logs LOG --progs DIR --port 0`
- sidecar replay: `python -m sidecar replay -c CFG --store sqlite://DB LOG` (the target is judged
  on this one)
- sidecar parse path: `python -c PARSE CFG LOG` (below): the same reader and parser as `replay`
  (`sidecar.sources.offline.samples_by_line`), without the rule and the store, so closer to mtail's work;
  for information

`replay` is the sidecar's command that puts every line of a log through the daemon's parse path:
the format decoder, the per-line literal gate, terminal decoding (`\\r`, ANSI, backspaces, UTF-8)
and `JobParser.feed`, which is what `Pipeline` runs on each chunk the tailer reads. It also does
more than mtail: the rule on every objective value and writing every value to a SQLite file (the
daemon's default store). `check` is not used: it runs each definition as its own parser to report
on it, which is not what the daemon does. No epoch regex is set, so each metric's k-th value is
epoch k and every value is one row: the rows stored per metric must equal mtail's counters.

`--tree DIR` runs the sidecar from another checkout (PYTHONPATH=DIR), e.g. a scratch copy with a
change to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
# (sidecar metric name, mtail variable name, regex)
METRICS = [
    ("val_loss", "val_loss", rf"val_loss=(?P<value>{NUMBER})"),
    ("val_acc", "val_acc", rf"val_acc=(?P<value>{NUMBER})"),
    ("train:auc", "train_auc", rf"train-auc:(?P<value>{NUMBER})"),
    ("validation:auc", "validation_auc", rf"validation-auc:(?P<value>{NUMBER})"),
]

PARSE = """
import json, sys
from pathlib import Path
from sidecar.cli import read_config
from sidecar.sources.offline import FileStats, samples_by_line
from sidecar.parse import Extractor
config = read_config(sys.argv[1])
extractor = Extractor(
    config.all_definitions(), config.epoch_config(), timeout=config.regex_timeout_seconds
)
parser = extractor.job_parser()
stats = FileStats()
values = {}
lines = samples_by_line(
    Path(sys.argv[2]), extractor, parser, max_line_bytes=config.max_line_bytes, stats=stats
)
for samples in lines:
    for sample in samples:
        values[sample.metric] = values.get(sample.metric, 0) + 1
for sample in parser.finish(stats.counts):
    values[sample.metric] = values.get(sample.metric, 0) + 1
print(json.dumps({"lines": stats.lines, "values": values}))
"""

INFO = [
    "INFO data.py:88] loaded shard {n} of 512 from s3://bucket/train/part-{n:05d}.parquet ({x:.1f} MB)",
    "INFO checkpoint.py:41] saved checkpoint to /opt/ml/checkpoints/step-{n}.pt in {x:.2f} s",
    "WARNING dataloader.py:560] worker {k} took {x:.2f} s to produce a batch; consider more workers",
    "INFO distributed.py:1120] NCCL INFO Channel {k:02d}/32 : 0[{k}] -> 1[{k}] via P2P/IPC",
    "DEBUG scheduler.py:77] lr warmup: step {n} lr {x:.3e} (target 3.0e-04)",
    "INFO trainer.py:301] validation will run at the end of the epoch ({n} batches)",
    "INFO metrics.py:19] throughput {x:.1f} samples/s, gpu mem {k}.{n} GiB, auc not computed yet",
    "INFO trainer.py:95] epoch {k} shuffling {n} samples with seed {k}",
    "WARNING amp.py:33] gradient overflow, skipping step {n}, loss scale reduced to {k}",
]
BAR_CHARS = "▏▎▍▌▋▊▉"


def make_log(path: Path, lines: int, metric_share: float, seed: int = 0) -> dict[str, int]:
    """Write the log; return how many values of each metric it holds."""
    rng = random.Random(seed)
    noise = 1.0 - metric_share
    step_below, info_below, bar_below = noise * 0.70 / 0.95, noise * 0.85 / 0.95, noise
    pytorch_below = noise + metric_share * 0.6
    expected = {name: 0 for name, _, _ in METRICS}
    epoch, xgb_round, step = 1, 0, 0
    out: list[str] = []
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for i in range(lines):
            r = rng.random()
            second = i // 400
            stamp = f"2024-06-01 {10 + second // 3600 % 14:02d}:{second // 60 % 60:02d}:{second % 60:02d},{i % 1000:03d}"
            if r < step_below:
                step += 1
                out.append(
                    f"{stamp} INFO trainer.py:212] epoch {epoch} step {step % 5000}/5000 "
                    f"loss {rng.random():.4f} lr {rng.random() * 3e-4:.2e} "
                    f"grad_norm {rng.random() * 4:.3f} {rng.random() * 900:.1f} samples/s"
                )
            elif r < info_below:
                template = INFO[rng.randrange(len(INFO))]
                n, k, x = rng.randrange(100000), rng.randrange(8), rng.random() * 100
                out.append(f"{stamp} " + template.format(n=n, k=k, x=x))
            elif r < bar_below:
                done = rng.randrange(1001)
                full, part = divmod(done * 10, 1000)
                bar = "█" * full + (BAR_CHARS[part * 7 // 1000] if full < 10 else "")
                out.append(
                    f"Epoch {epoch}: {done // 10:3d}%|{bar:<10}| {done}/1000 "
                    f"[00:{done // 60 % 60:02d}<00:15, {rng.random() * 50:.2f}it/s, "
                    f"loss={rng.random():.3f}]"
                )
            elif r < pytorch_below:
                out.append(f"epoch={epoch} val_loss={rng.random():.4f} val_acc={rng.random():.4f}")
                expected["val_loss"] += 1
                expected["val_acc"] += 1
                epoch += 1
            else:
                out.append(
                    f"[{xgb_round}]\ttrain-auc:{rng.random():.5f}\tvalidation-auc:{rng.random():.5f}"
                )
                expected["train:auc"] += 1
                expected["validation:auc"] += 1
                xgb_round += 1
            if len(out) >= 50_000:
                f.write("\n".join(out) + "\n")
                out.clear()
        if out:
            f.write("\n".join(out) + "\n")
    return expected


def mtail_program() -> str:
    parts = [f"# {len(METRICS)} metrics, the sidecar config's regexes\n"]
    for _name, var, rx in METRICS:
        parts.append(
            f"gauge {var}\ncounter {var}_values\n"
            f"/{rx}/ {{\n  {var} = float($value)\n  {var}_values++\n}}\n"
        )
    return "\n".join(parts)


def sidecar_config(tmp: Path) -> dict[str, object]:
    return {
        "tuning_job": "parse-bench",
        "objective": {"metric": "val_loss", "type": "Minimize"},
        "metric_definitions": [{"Name": name, "Regex": rx} for name, _, rx in METRICS],
        "sources": [{"path": str(tmp / "*.log"), "format": "plain"}],
        "stop": {"backend": "none"},
        "store": f"sqlite://{tmp / 'unused.db'}",
        "log_level": "warning",
    }


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def timed(
    argv: list[str], stdout: Path, env: dict[str, str] | None = None
) -> tuple[float, float, int | None]:
    """Run a whole process: (wall seconds, CPU seconds user+sys, max RSS KiB or None).

    The max RSS comes from GNU time (package `time`) when it is there: a child started from this
    process would report at least this process's own peak (Linux keeps it across exec).
    """
    err_path = stdout.with_suffix(".err")
    rss_path = stdout.with_suffix(".rss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_path), *argv] if GNU_TIME else argv
    with stdout.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        # run in the work folder: `-m`/`-c` put the current folder first on sys.path, and from
        # a checkout that would import its `sidecar` instead of PYTHONPATH's (--tree)
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=stdout.parent)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} exited {proc.returncode}:\n{err_path.read_text()[-2000:]}")
    rss = int(rss_path.read_text().split()[-1]) if GNU_TIME else None
    return wall, usage.ru_utime + usage.ru_stime, rss


def mtail_counts(path: Path) -> dict[str, int]:
    document = json.loads(path.read_text())
    counts = {}
    for name, var, _ in METRICS:
        series = document.get(f"{var}_values", [])
        counts[name] = int(sum(lv["Value"]["Value"] for s in series for lv in s["LabelValues"]))
    return counts


def sidecar_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        rows = dict(conn.execute("SELECT metric, count(*) FROM metric_values GROUP BY metric"))
    finally:
        conn.close()
    return {name: int(rows.get(name, 0)) for name, _, _ in METRICS}


def warm(path: Path) -> None:
    """Read the file once so every run reads it from the page cache (in pieces: this process's
    memory stays small, and a child's max RSS does not start from it)."""
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass


FLOOR_SCRIPT = """
import re, sys, time
pattern = re.compile(sys.argv[2].encode())
t0 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    n = sum(1 for _ in f)
t1 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    m = sum(1 for _ in pattern.finditer(f.read()))
t2 = time.perf_counter()
print(f"{n} {m} {t1 - t0:.4f} {t2 - t1:.4f}")
"""

# the targets: replay / mtail at each share (never below 1x anywhere)
TARGETS = {0.02: 10.0, 0.2: 2.0}


def floors(log: Path) -> dict[str, float]:
    """What bounds any tool's time on this log (wall seconds): counting lines with `rg -c`,
    Python's raw line iteration, one `re.finditer` of the four regexes' alternation over the
    whole file (the per-value floor of a regex-driven parser in Python)."""
    out: dict[str, float] = {}
    rg = shutil.which("rg")
    if rg:
        t0 = time.perf_counter()
        subprocess.run([rg, "-c", "", str(log)], capture_output=True, check=False)
        out["rg -c"] = time.perf_counter() - t0
    alternation = "|".join(rx.replace("?P<value>", "") for _, _, rx in METRICS)
    done = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, str(log), alternation],
        capture_output=True,
        text=True,
        check=True,
    )
    _n, _m, iterate, scan = done.stdout.split()
    out["python line iteration"] = float(iterate)
    out["re.finditer alternation"] = float(scan)
    return out


def measure(args: argparse.Namespace, share: float, tmp: Path) -> dict[str, object]:
    """Every tool on one log with `share` metric lines: per tool (best wall, median wall, median
    CPU, peak RSS KiB), the floors, and whether every tool found every value."""
    log = tmp / "job-001.log"
    t0 = time.perf_counter()
    expected = make_log(log, args.lines, share)
    size = log.stat().st_size
    print(
        f"log: {args.lines:,} lines, {share:.1%} metric lines, {size / 1e6:.0f} MB, "
        f"{sum(expected.values()):,} values, written in {time.perf_counter() - t0:.1f} s"
    )
    progs = tmp / "progs"
    progs.mkdir(exist_ok=True)
    (progs / "metrics.mtail").write_text(mtail_program())
    cfg = tmp / "config.json"
    config = sidecar_config(tmp)
    cfg.write_text(json.dumps(config, indent=2))
    lean = tmp / "config-objective.json"
    lean.write_text(json.dumps({**config, "store_metrics": "objective"}, indent=2))
    warm(log)
    env = {**os.environ, "PYTHONPATH": str(args.tree)}
    mtail_argv = [
        args.mtail,
        "--one_shot",
        "--one_shot_format",
        "json",
        "--logs",
        str(log),
        "--progs",
        str(progs),
        "--port",
        "0",
        "--logtostderr",
    ]
    results: dict[str, list[tuple[float, float, int | None]]] = {tool: [] for tool in TOOLS}
    found: dict[str, dict[str, int]] = {}
    for k in range(args.runs):
        out = tmp / f"mtail-{k}.json"
        results["mtail"].append(timed(mtail_argv, out))
        found["mtail"] = mtail_counts(out)
        for tool, config_path in (
            ("sidecar replay", cfg),
            ("replay, store_metrics: objective", lean),
        ):
            db = tmp / f"sidecar-{k}.db"
            for stale in tmp.glob(f"sidecar-{k}.db*"):
                stale.unlink()
            argv = [
                sys.executable,
                "-m",
                "sidecar",
                "replay",
                "-c",
                str(config_path),
                "--store",
                f"sqlite://{db}",
                str(log),
            ]
            results[tool].append(timed(argv, tmp / f"sidecar-{k}.txt", env))
            counts = sidecar_counts(db)
            if tool == "sidecar replay":
                found[tool] = counts
            elif counts["val_loss"] != expected["val_loss"]:
                sys.exit(f"{tool} stored {counts['val_loss']} objective values, not {expected}")
        out = tmp / f"parse-{k}.json"
        parse_argv = [sys.executable, "-c", PARSE, str(cfg), str(log)]
        results["sidecar parse path"].append(timed(parse_argv, out, env))
        parsed = json.loads(out.read_text())
        if parsed["lines"] != args.lines:
            sys.exit(f"the parse path read {parsed['lines']} lines, not {args.lines}")
        found["sidecar parse path"] = {
            name: int(parsed["values"].get(name, 0)) for name, _, _ in METRICS
        }
        print(
            f"  run {k + 1}/{args.runs}: "
            + ", ".join(f"{tool} {results[tool][-1][0]:.2f} s" for tool in TOOLS)
        )
    compared = ("mtail", "sidecar replay", "sidecar parse path")
    same = all(
        len({expected[name], *(found[tool][name] for tool in compared[0:3])}) == 1
        for name, _, _ in METRICS
    )
    return {
        "share": share,
        "results": results,
        "floors": floors(log),
        "same": same,
        "expected": expected,
        "found": found,
    }


TOOLS = ("mtail", "sidecar replay", "replay, store_metrics: objective", "sidecar parse path")


def table(measured: list[dict[str, object]], lines: int) -> list[str]:
    """The side-by-side table, as Markdown rows."""
    rows = [
        "| metric lines | tool | wall s (best / median) | lines/s | vs mtail | CPU s | max RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in measured:
        results = m["results"]
        assert isinstance(results, dict)
        share = m["share"]
        assert isinstance(share, float)
        best_mtail = min(r[0] for r in results["mtail"])
        for tool in TOOLS:
            runs = results[tool]
            best = min(r[0] for r in runs)
            median = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            peaks = [r[2] for r in runs if r[2] is not None]
            rss = f"{max(peaks) / 1024:.0f}" if peaks else "n/a"
            rows.append(
                f"| {share:.1%} | {tool} | {best:.2f} / {median:.2f} | {lines / best:,.0f} "
                f"| {best_mtail / best:.2f}x | {cpu:.2f} | {rss} |"
            )
        floors_ = m["floors"]
        assert isinstance(floors_, dict)
        for name, seconds in floors_.items():
            rows.append(
                f"| {share:.1%} | floor: {name} | {seconds:.2f} | {lines / seconds:,.0f} "
                f"| {best_mtail / seconds:.2f}x | | |"
            )
    return rows


def verdicts(measured: list[dict[str, object]]) -> list[str]:
    out = []
    for m in measured:
        results = m["results"]
        share = m["share"]
        assert isinstance(results, dict) and isinstance(share, float)
        ratio = min(r[0] for r in results["mtail"]) / min(r[0] for r in results["sidecar replay"])
        target = TARGETS.get(share, 1.0)
        verdict = "MET" if ratio >= target else "NOT MET"
        out.append(f"- {share:.1%}: replay {ratio:.2f}x mtail; target >= {target:g}x: {verdict}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (alternating)")
    parser.add_argument(
        "--metric-share",
        type=float,
        nargs="+",
        default=[0.005, 0.02, 0.05, 0.2],
        help="shares of the lines that hold metrics, one log each",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the sidecar checkout to run (default: this one)",
    )
    parser.add_argument("--mtail", default=shutil.which("mtail") or "/usr/bin/mtail")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (logs, program, configs)"
    )
    parser.add_argument(
        "--results", type=Path, help="also write the table here (benchmarks/RESULTS.md)"
    )
    args = parser.parse_args()
    if not Path(args.mtail).exists():
        sys.exit(f"mtail not found at {args.mtail}: apt-get install -y mtail")
    version = subprocess.run(
        [args.mtail, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    measured = []
    with tempfile.TemporaryDirectory() as scratch:
        for share in args.metric_share:
            tmp = (args.keep or Path(scratch)) / f"share-{share}"
            tmp.mkdir(parents=True, exist_ok=True)
            measured.append(measure(args, share, tmp))
            if not args.keep:
                shutil.rmtree(tmp)
    head = [
        f"Parse throughput, {args.lines:,}-line logs, whole processes, best of {args.runs} runs "
        f"each (`benchmarks/parse_throughput.py`), {time.strftime('%Y-%m-%d')}",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}",
        f"- mtail: {version}",
        f"- sidecar: Python {sys.version.split()[0]}, regex {regex_version()}",
        "",
    ]
    rows = table(measured, args.lines)
    tail = ["", "Targets (replay vs mtail):", *verdicts(measured)]
    ok = all(m["same"] for m in measured)
    tail.append(f"- every tool extracted every value: {'yes' if ok else 'NO'}")
    text = "\n".join([*head, *rows, *tail]) + "\n"
    print()
    print(text)
    if args.results:
        args.results.write_text("# Benchmark results\n\n" + text)
    if not ok:
        for m in measured:
            print(m["share"], m["expected"], m["found"])
        sys.exit(1)


def regex_version() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import regex; print(regex.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
