"""Parse throughput against `mtail --one_shot`, side by side on the same log (DESIGN §9).

    .venv/bin/python benchmarks/parse_throughput.py [--lines 3000000] [--runs 3] [--keep DIR]
        [--mtail /usr/bin/mtail]

Needs the Debian package's mtail (`apt-get install -y mtail`). Target: the sidecar parses at least
5x the lines per second of mtail, both timed as whole processes, start-up included.

The log (one training job, 3,000,000 lines by default, seeded, about 290 MB) is mostly noise, as a
real one is; per 1,000 lines on average:

    700  step lines     `2024-06-01 10:00:00,123 INFO trainer.py:212] epoch 12 step 3400/5000 loss 0.4821 ...`
    150  info lines     data loader, checkpoint, NCCL, warnings, ... (varied text)
    100  progress bars  `Epoch 12:  45%|████▌     | 450/1000 [00:12<00:15, 36.10it/s, loss=0.482]`
                        (UTF-8 bar characters; written with `\\n`, not redrawn with `\\r`, since
                        mtail splits on `\\n` only and would see different lines)
     30  metric lines   `epoch=12 val_loss=0.4312 val_acc=0.8800`            (2 values)
     20  XGBoost lines  `[12]\\ttrain-auc:0.91234\\tvalidation-auc:0.81234`   (2 values)

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
- sidecar: `python -m sidecar replay -c CFG --store sqlite://DB LOG`

`replay` is the sidecar's command that puts every line of a log through the daemon's parse path:
the format decoder, the per-line literal gate, terminal decoding (`\\r`, ANSI, backspaces, UTF-8)
and `JobParser.feed`, which is what `Pipeline` runs on each chunk the tailer reads. It also does
more than mtail: the rule on every objective value and writing every value to a SQLite file (the
daemon's default store). `check` is not used: it runs each definition as its own parser to report
on it, which is not what the daemon does. No epoch regex is set, so each metric's k-th value is
epoch k and every value is one row: the rows stored per metric must equal mtail's counters.
"""

from __future__ import annotations

import argparse
import json
import os
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


def make_log(path: Path, lines: int, seed: int = 0) -> dict[str, int]:
    """Write the log; return how many values of each metric it holds."""
    rng = random.Random(seed)
    expected = {name: 0 for name, _, _ in METRICS}
    epoch, xgb_round, step = 1, 0, 0
    out: list[str] = []
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for i in range(lines):
            r = rng.random()
            second = i // 400
            stamp = f"2024-06-01 {10 + second // 3600 % 14:02d}:{second // 60 % 60:02d}:{second % 60:02d},{i % 1000:03d}"
            if r < 0.70:
                step += 1
                out.append(
                    f"{stamp} INFO trainer.py:212] epoch {epoch} step {step % 5000}/5000 "
                    f"loss {rng.random():.4f} lr {rng.random() * 3e-4:.2e} "
                    f"grad_norm {rng.random() * 4:.3f} {rng.random() * 900:.1f} samples/s"
                )
            elif r < 0.85:
                template = INFO[rng.randrange(len(INFO))]
                n, k, x = rng.randrange(100000), rng.randrange(8), rng.random() * 100
                out.append(f"{stamp} " + template.format(n=n, k=k, x=x))
            elif r < 0.95:
                done = rng.randrange(1001)
                full, part = divmod(done * 10, 1000)
                bar = "█" * full + (BAR_CHARS[part * 7 // 1000] if full < 10 else "")
                out.append(
                    f"Epoch {epoch}: {done // 10:3d}%|{bar:<10}| {done}/1000 "
                    f"[00:{done // 60 % 60:02d}<00:15, {rng.random() * 50:.2f}it/s, "
                    f"loss={rng.random():.3f}]"
                )
            elif r < 0.98:
                out.append(
                    f"epoch={epoch} val_loss={rng.random():.4f} val_acc={rng.random():.4f}"
                )
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


def timed(argv: list[str], stdout: Path) -> tuple[float, float, int]:
    """Run a whole process: (wall seconds, CPU seconds user+sys, max RSS KiB)."""
    with stdout.open("wb") as out, (stdout.with_suffix(".err")).open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(
            f"{argv[0]} exited {proc.returncode}:\n{stdout.with_suffix('.err').read_text()[-2000:]}"
        )
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (alternating)")
    parser.add_argument("--mtail", default=shutil.which("mtail") or "/usr/bin/mtail")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (log, program, config, output)"
    )
    args = parser.parse_args()
    if not Path(args.mtail).exists():
        sys.exit(f"mtail not found at {args.mtail}: apt-get install -y mtail")
    version = subprocess.run(
        [args.mtail, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        log = tmp / "job-001.log"
        t0 = time.perf_counter()
        expected = make_log(log, args.lines)
        size = log.stat().st_size
        print(
            f"log: {args.lines:,} lines, {size / 1e6:.0f} MB, {sum(expected.values()):,} values "
            f"({', '.join(f'{k} {v:,}' for k, v in expected.items())}), "
            f"written in {time.perf_counter() - t0:.1f} s"
        )
        progs = tmp / "progs"
        progs.mkdir(exist_ok=True)
        (progs / "metrics.mtail").write_text(mtail_program())
        cfg = tmp / "config.json"
        cfg.write_text(json.dumps(sidecar_config(tmp), indent=2))
        log.read_bytes()  # both tools read it from the page cache

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
        results: dict[str, list[tuple[float, float, int]]] = {"mtail": [], "sidecar": []}
        found: dict[str, dict[str, int]] = {}
        for k in range(args.runs):
            out = tmp / f"mtail-{k}.json"
            results["mtail"].append(timed(mtail_argv, out))
            found["mtail"] = mtail_counts(out)

            db = tmp / f"sidecar-{k}.db"
            for stale in tmp.glob(f"sidecar-{k}.db*"):
                stale.unlink()
            sidecar_argv = [
                sys.executable,
                "-m",
                "sidecar",
                "replay",
                "-c",
                str(cfg),
                "--store",
                f"sqlite://{db}",
                str(log),
            ]
            results["sidecar"].append(timed(sidecar_argv, tmp / f"sidecar-{k}.txt"))
            found["sidecar"] = sidecar_counts(db)
            print(
                f"run {k + 1}/{args.runs}: mtail {results['mtail'][-1][0]:.2f} s, "
                f"sidecar {results['sidecar'][-1][0]:.2f} s"
            )

        print()
        print(f"parse throughput, {args.lines:,}-line log, whole processes, {args.runs} runs each")
        print(f"  mtail:   {version}")
        print(f"  sidecar: {sys.executable} -m sidecar replay (Python {sys.version.split()[0]})")
        print()
        header = f"{'tool':<10}{'wall s (best / median)':>26}{'lines/s (best)':>18}"
        header += f"{'CPU s (median)':>16}{'max RSS MB':>12}"
        print(header)
        rates = {}
        for tool, runs in results.items():
            walls = [r[0] for r in runs]
            best, median = min(walls), statistics.median(walls)
            rates[tool] = args.lines / best
            cpu = statistics.median(r[1] for r in runs)
            rss = max(r[2] for r in runs) / 1024
            print(
                f"{tool:<10}{best:>14.2f} / {median:>9.2f}{rates[tool]:>18,.0f}{cpu:>16.2f}{rss:>12.0f}"
            )
        ratio = rates["sidecar"] / rates["mtail"]
        median_ratio = statistics.median(r[0] for r in results["mtail"]) / statistics.median(
            r[0] for r in results["sidecar"]
        )
        print()
        print(
            f"sidecar / mtail lines per second: {ratio:.2f}x best, {median_ratio:.2f}x median "
            f"(target >= 5x): {'MET' if min(ratio, median_ratio) >= 5 else 'NOT MET'}"
        )
        print()
        print(f"{'values extracted':<18}{'in the log':>12}{'mtail':>12}{'sidecar':>12}")
        same = True
        for name, _, _ in METRICS:
            row = (expected[name], found["mtail"][name], found["sidecar"][name])
            same = same and len(set(row)) == 1
            print(f"{name:<18}{row[0]:>12,}{row[1]:>12,}{row[2]:>12,}")
        print(f"both extracted every value: {'yes' if same else 'NO'}")
        if args.keep:
            print(f"kept in {tmp}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
