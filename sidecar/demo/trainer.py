"""A stand-in training job for `sidecar demo`: noisy learning curves printed like a real trainer.

Run as `python -m sidecar.demo.trainer --job NAME --lr 0.01 --epochs 12`. It writes its pid file, then
per epoch a progress bar redrawn with `\\r` and a summary line; SIGTERM ends it like a trainer that
saves nothing and exits.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import sys
import time
from types import FrameType
from typing import Any


def curve(lr: float, epochs: int, seed: int) -> list[float]:
    """Validation loss per epoch: fast and low near lr 0.03, slow for tiny lr, diverging for big lr."""
    rng = random.Random(seed)
    if lr >= 0.25:  # too high: the loss explodes and turns into nan
        return [1.4 + 0.5 * e if e < 3 else math.nan for e in range(1, epochs + 1)]
    quality = abs(math.log10(lr / 0.03))  # 0 at the sweet spot
    floor = 0.25 + 0.35 * quality
    rate = max(0.06, 0.65 - 0.4 * quality)
    return [
        floor + (2.3 - floor) * math.exp(-rate * e) + rng.gauss(0, 0.015)
        for e in range(1, epochs + 1)
    ]


class Tee:
    """Writes to a stream and a file (`--log`): the trainer's output kept for a replay."""

    def __init__(self, stream: Any, file: Any) -> None:
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.file.write(text)
        return int(self.stream.write(text))

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.demo.trainer")
    parser.add_argument("--job", required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch-seconds", type=float, default=0.25)
    parser.add_argument("--pid-file")
    parser.add_argument("--log", help="also append everything printed to this file")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        del frame
        print(f"received {signal.Signals(signum).name}: stopping", flush=True)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    if args.pid_file:
        with open(args.pid_file + ".tmp", "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(args.pid_file + ".tmp", args.pid_file)
    out: Any = Tee(sys.stdout, open(args.log, "a")) if args.log else sys.stdout  # noqa: SIM115
    print(f"starting job {args.job} lr={args.lr} epochs={args.epochs}", file=out, flush=True)
    steps = 20
    for epoch, val in enumerate(curve(args.lr, args.epochs, args.seed), 1):
        out.write(f"Epoch {epoch}/{args.epochs}\n")
        for step in range(1, steps + 1):
            out.write(f"\r{step}/{steps} [{'=' * (step * 10 // steps):<10}]")
            out.flush()
            time.sleep(args.epoch_seconds / steps)
        train = val * 0.92
        acc = max(0.0, min(1.0, 1.05 - val / 2.4)) if math.isfinite(val) else 0.0
        out.write(f" - epoch {epoch} train_loss={train:.4f} val_loss={val:.4f} val_acc={acc:.4f}\n")
        out.flush()
    print("training finished", file=out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
