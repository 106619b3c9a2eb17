#!/usr/bin/env python3
"""Regenerate sample_logs/: small tuning jobs run with the real frameworks, their logs and ground truth.

Run with the generation environment (sample_logs/requirements.txt), not the sidecar's:

    python3 -m venv /tmp/genvenv
    /tmp/genvenv/bin/pip install torch==2.13.0          # first: the CPU build, nothing newer
    /tmp/genvenv/bin/pip install -r sample_logs/requirements.txt
    /tmp/genvenv/bin/python sample_logs/generate.py [SUITE ...] [--sidecar PATH]

For each suite (a tuning job) it runs every job as its own process, CPU only, on a data set bundled
with scikit-learn, with stdout and stderr going to one file exactly as the framework writes them when
not on a terminal. Beside each `<job>.log` it writes `<job>.truth.json`: the series taken from the
framework's own API (evals_result, record_evaluation, History.history, log_history, CSVLogger,
loss_curve_ ...), named and numbered as the suite's preset names them, with the precision the log
prints them at. Then it writes the derived copies (CloudWatch `#011`, Docker json-file, CRI),
`expected_replay.json` of each suite (`sidecar replay --json`, which needs the sidecar: `--sidecar`,
default ../.venv/bin/sidecar) and VERSIONS.txt. The tests never run this script.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 0

# ---------------------------------------------------------------------------------------------
# Suites: one tuning job each. `jobs` are launched (and replayed) in this order.
# `tol` is how precisely the log prints values (math.isclose tolerances, half a unit in the last
# printed digit): the golden tests compare the parsed value with the API's value within it.
# ---------------------------------------------------------------------------------------------

SUITES: dict[str, dict[str, Any]] = {
    "xgboost": {
        "runner": "xgboost",
        "preset": "xgboost",
        "objective": ("validation:logloss", "Minimize"),
        "printed": {"format": "%.5f (EvaluationMonitor)", "rel_tol": 0.0, "abs_tol": 5.01e-6},
        "jobs": [
            ("01-eta0.30-depth3", {"eta": 0.3, "max_depth": 3}),
            ("02-eta0.10-depth4", {"eta": 0.1, "max_depth": 4}),
            ("03-eta0.02-depth2", {"eta": 0.02, "max_depth": 2}),
            ("04-eta0.50-depth6", {"eta": 0.5, "max_depth": 6}),
            ("05-eta0.01-depth1", {"eta": 0.01, "max_depth": 1}),
            ("06-eta0.80-depth6-es", {"eta": 0.8, "max_depth": 6, "early_stopping_rounds": 2}),
        ],
    },
    "lightgbm": {
        "runner": "lightgbm",
        "preset": "lightgbm",
        "objective": ("valid_0:binary_logloss", "Minimize"),
        "printed": {"format": "%g (log_evaluation)", "rel_tol": 5.01e-6, "abs_tol": 0.0},
        "jobs": [
            ("01-lr0.10-leaves15", {"learning_rate": 0.1, "num_leaves": 15}),
            ("02-lr0.05-leaves31", {"learning_rate": 0.05, "num_leaves": 31}),
            ("03-lr0.01-leaves7", {"learning_rate": 0.01, "num_leaves": 7}),
            ("04-lr0.30-leaves31", {"learning_rate": 0.3, "num_leaves": 31, "early_stopping": 3}),
            ("05-lr0.005-leaves3", {"learning_rate": 0.005, "num_leaves": 3}),
            ("06-lr0.15-leaves7", {"learning_rate": 0.15, "num_leaves": 7}),
        ],
    },
    "keras": {
        "runner": "keras",
        "preset": "keras",
        "objective": ("val_loss", "Minimize"),
        "printed": {
            "format": "%.4f, %.4e below 1e-3 (Progbar)",
            "rel_tol": 5.01e-4,
            "abs_tol": 5.01e-5,
        },
        "jobs": [
            ("01-adam-lr0.010", {"lr": 0.01, "units": 32, "verbose": 2}),
            ("02-adam-lr0.003", {"lr": 0.003, "units": 64, "verbose": 2}),
            ("03-adam-lr0.0001", {"lr": 0.0001, "units": 16, "verbose": 2}),
            ("04-adam-lr0.030", {"lr": 0.03, "units": 32, "verbose": 2}),
            ("05-adam-lr0.00003", {"lr": 0.00003, "units": 8, "verbose": 2}),
            ("06-adam-lr0.001", {"lr": 0.001, "units": 64, "verbose": 2}),
        ],
    },
    "keras-progbar": {
        "runner": "keras",
        "preset": "keras",
        "objective": ("val_accuracy", "Maximize"),
        "printed": {
            "format": "%.4f, %.4e below 1e-3 (Progbar)",
            "rel_tol": 5.01e-4,
            "abs_tol": 5.01e-5,
        },
        "jobs": [
            ("01-adam-lr0.010", {"lr": 0.01, "units": 32, "verbose": 1}),
            ("02-adam-lr0.0001", {"lr": 0.0001, "units": 16, "verbose": 1}),
            ("03-adam-lr0.003", {"lr": 0.003, "units": 64, "verbose": 1}),
            ("04-adam-lr0.00003", {"lr": 0.00003, "units": 8, "verbose": 1}),
            ("05-adam-lr0.030", {"lr": 0.03, "units": 32, "verbose": 1}),
        ],
    },
    "transformers": {
        "runner": "transformers",
        "preset": "transformers",
        "objective": ("eval_loss", "Minimize"),
        "printed": {
            "format": "4 significant digits, quoted (Trainer.log)",
            "rel_tol": 5.01e-4,
            "abs_tol": 0.0,
        },
        "jobs": [
            ("01-lr3e-3", {"lr": 3e-3}),
            ("02-lr1e-3", {"lr": 1e-3}),
            ("03-lr1e-5", {"lr": 1e-5}),
            ("04-lr1e-2", {"lr": 1e-2}),
            ("05-lr3e-5", {"lr": 3e-5}),
        ],
    },
    "lightning": {
        "runner": "lightning",
        "preset": "lightning",
        "objective": ("val_loss", "Minimize"),
        "printed": {"format": "%.3g (tqdm set_postfix)", "rel_tol": 5.01e-3, "abs_tol": 0.0},
        "jobs": [
            ("01-sgd-lr0.10", {"lr": 0.1, "bar": "tqdm"}),
            ("02-sgd-lr0.30", {"lr": 0.3, "bar": "tqdm"}),
            ("03-sgd-lr0.003", {"lr": 0.003, "bar": "tqdm"}),
            ("04-sgd-lr0.05", {"lr": 0.05, "bar": "tqdm"}),
            ("05-sgd-lr0.001", {"lr": 0.001, "bar": "tqdm"}),
            ("06-sgd-lr1.00", {"lr": 1.0, "bar": "tqdm"}),
        ],
    },
    "lightning-rich": {
        "runner": "lightning",
        "preset": "lightning",
        "objective": ("val_loss", "Minimize"),
        "printed": {"format": "%.3f (RichProgressBar)", "rel_tol": 0.0, "abs_tol": 5.01e-4},
        "jobs": [
            ("01-sgd-lr0.10", {"lr": 0.1, "bar": "rich"}),
            ("02-sgd-lr0.003", {"lr": 0.003, "bar": "rich"}),
            ("03-sgd-lr0.30", {"lr": 0.3, "bar": "rich"}),
            ("04-sgd-lr0.001", {"lr": 0.001, "bar": "rich"}),
            ("05-sgd-lr0.05", {"lr": 0.05, "bar": "rich"}),
        ],
    },
    "sklearn": {
        "runner": "sklearn",
        "preset": "sklearn",
        "objective": ("validation_score", "Maximize"),
        "printed": {"format": "loss %.8f, validation score %f", "rel_tol": 0.0, "abs_tol": 5.01e-7},
        "jobs": [
            (
                "01-adam-lr0.001-h64",
                {"kind": "classifier", "lr": 0.001, "hidden": 64, "early_stopping": True},
            ),
            (
                "02-adam-lr0.0001-h16",
                {"kind": "classifier", "lr": 0.0001, "hidden": 16, "early_stopping": True},
            ),
            (
                "03-adam-lr0.01-h32",
                {"kind": "classifier", "lr": 0.01, "hidden": 32, "early_stopping": True},
            ),
            (
                "04-adam-lr0.00002-h8",
                {"kind": "classifier", "lr": 0.00002, "hidden": 8, "early_stopping": True},
            ),
            (
                "05-adam-lr0.003-h128",
                {"kind": "classifier", "lr": 0.003, "hidden": 128, "early_stopping": True},
            ),
            (
                "06-sgd-lr0.01-h32",
                {
                    "kind": "classifier",
                    "lr": 0.01,
                    "hidden": 32,
                    "early_stopping": True,
                    "solver": "sgd",
                },
            ),
        ],
    },
    "sklearn-regressor": {
        "runner": "sklearn",
        "preset": "sklearn",
        "objective": ("loss", "Minimize"),
        "printed": {"format": "loss %.8f", "rel_tol": 0.0, "abs_tol": 5.01e-9},
        "jobs": [
            ("01-adam-lr0.01-h64", {"kind": "regressor", "lr": 0.01, "hidden": 64}),
            ("02-adam-lr0.001-h16", {"kind": "regressor", "lr": 0.001, "hidden": 16}),
            ("03-adam-lr0.03-h32", {"kind": "regressor", "lr": 0.03, "hidden": 32}),
            ("04-adam-lr0.0003-h8", {"kind": "regressor", "lr": 0.0003, "hidden": 8}),
            ("05-adam-lr0.1-h64", {"kind": "regressor", "lr": 0.1, "hidden": 64}),
        ],
    },
    "jsonl": {
        "runner": "torchloop",
        "preset": "jsonl",
        "objective": ("val_loss", "Minimize"),
        "printed": {"format": "json.dumps (repr: exact)", "rel_tol": 0.0, "abs_tol": 0.0},
        "jobs": [
            ("01-sgd-lr0.10", {"lr": 0.1, "format": "jsonl"}),
            ("02-sgd-lr0.01", {"lr": 0.01, "format": "jsonl"}),
            ("03-sgd-lr0.50", {"lr": 0.5, "format": "jsonl"}),
            ("04-sgd-lr0.001", {"lr": 0.001, "format": "jsonl", "counter": "step"}),
            ("05-sgd-lr0.20", {"lr": 0.2, "format": "jsonl"}),
            ("06-sgd-lr1e38", {"lr": 1e38, "format": "jsonl"}),
        ],
    },
    "keyvalue": {
        "runner": "torchloop",
        "preset": "keyvalue",
        "objective": ("Validation-loss", "Minimize"),
        "printed": {"format": "%.6f", "rel_tol": 0.0, "abs_tol": 5.01e-7},
        "jobs": [
            ("01-sgd-lr0.10", {"lr": 0.1, "format": "keyvalue"}),
            ("02-sgd-lr0.01", {"lr": 0.01, "format": "keyvalue"}),
            ("03-sgd-lr0.50", {"lr": 0.5, "format": "keyvalue"}),
            ("04-sgd-lr0.001", {"lr": 0.001, "format": "keyvalue"}),
            ("05-sgd-lr0.20", {"lr": 0.2, "format": "keyvalue"}),
        ],
    },
}

# Derived suites: copies of another suite's logs in another form (same truth, another preset/format).
DERIVED: dict[str, dict[str, Any]] = {
    # CloudWatch shows the tabs of SageMaker's built-in algorithms as `#011`
    "xgboost-cloudwatch": {
        "from": "xgboost",
        "kind": "cloudwatch",
        "preset": "sagemaker-xgboost",
        "objective": ("validation:logloss", "Minimize"),
    },
}

# Docker json-file and CRI copies of a few logs (in sample_logs/formats/), parsed like the originals.
FORMAT_COPIES = [
    ("xgboost", "01-eta0.30-depth3"),
    ("keras-progbar", "01-adam-lr0.010"),
    ("lightning", "01-sgd-lr0.10"),
    ("transformers", "01-lr3e-3"),
]

FRAMEWORK_PACKAGES = {
    "xgboost": ["xgboost", "scikit-learn", "numpy"],
    "lightgbm": ["lightgbm", "scikit-learn", "numpy"],
    "keras": ["keras", "torch", "scikit-learn"],
    "transformers": ["transformers", "accelerate", "torch", "tqdm", "scikit-learn"],
    "lightning": ["lightning", "torch", "tqdm", "rich", "scikit-learn"],
    "sklearn": ["scikit-learn", "numpy"],
    "torchloop": ["torch", "scikit-learn"],
}


# ------------------------------------------------------------------------------------------------
# Job runners: each runs in its own process (`generate.py --run RUNNER PARAMS TRUTH`), prints what the
# framework prints, and writes the truth file. Nothing else is printed to stdout/stderr.
# ------------------------------------------------------------------------------------------------


def _series(pairs: dict[str, list[tuple[int, float]]]) -> dict[str, list[list[float]]]:
    return {m: [[int(e), float(v)] for e, v in vs] for m, vs in sorted(pairs.items())}


def _write_truth(
    path: str, source: str, series: dict[str, list[tuple[int, float]]], **extra: Any
) -> None:
    doc = {"source": source, "series": _series(series), **extra}
    Path(path).write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")


def run_xgboost(p: dict[str, Any], truth: str) -> None:
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=SEED)
    dtrain, dval = xgb.DMatrix(xt, label=yt), xgb.DMatrix(xv, label=yv)
    params = {
        "objective": "binary:logistic",
        "eval_metric": ["auc", "logloss"],
        "eta": p["eta"],
        "max_depth": p["max_depth"],
        "seed": SEED,
        "nthread": 1,
    }
    result: dict[str, Any] = {}
    xgb.train(
        params,
        dtrain,
        num_boost_round=20,
        evals=[(dtrain, "train"), (dval, "validation")],
        evals_result=result,
        early_stopping_rounds=p.get("early_stopping_rounds"),
    )
    series = {
        f"{s}:{m}": list(enumerate(vals, 1)) for s, ms in result.items() for m, vals in ms.items()
    }
    _write_truth(truth, "xgboost.train(evals_result=...); round r is epoch r+1", series)


def run_lightgbm(p: dict[str, Any], truth: str) -> None:
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=SEED)
    dtrain = lgb.Dataset(xt, label=yt)
    dval = lgb.Dataset(xv, label=yv, reference=dtrain)
    params = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "learning_rate": p["learning_rate"],
        "num_leaves": p["num_leaves"],
        "seed": SEED,
        "num_threads": 1,
        "deterministic": True,
    }
    record: dict[str, Any] = {}
    callbacks = [lgb.log_evaluation(1), lgb.record_evaluation(record)]
    if p.get("early_stopping"):
        callbacks.append(lgb.early_stopping(p["early_stopping"]))
    lgb.train(
        params,
        dtrain,
        num_boost_round=25,
        valid_sets=[dtrain, dval],
        valid_names=["training", "valid_0"],
        callbacks=callbacks,
    )
    series = {
        f"{s}:{m}": list(enumerate(vals, 1)) for s, ms in record.items() for m, vals in ms.items()
    }
    _write_truth(truth, "lightgbm.record_evaluation(); iteration i is epoch i", series)


def run_keras(p: dict[str, Any], truth: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    xt, xv, yt, yv = train_test_split(x, y, test_size=0.25, random_state=SEED)
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(p["units"], activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(p["lr"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        xt, yt, validation_data=(xv, yv), epochs=6, batch_size=32, verbose=p["verbose"]
    )
    series = {m: list(enumerate(vals, 1)) for m, vals in history.history.items()}
    _write_truth(truth, "keras History.history; list index k is epoch k+1", series)


def run_transformers(p: dict[str, Any], truth: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sklearn.datasets import load_digits
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    x, y = load_digits(return_X_y=True)
    tokens = x.astype(int) + 1  # 64 pixels, intensities 0..16 as tokens 1..17

    class Digits(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, a: Any, b: Any) -> None:
            self.a, self.b = a, b

        def __len__(self) -> int:
            return len(self.a)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": torch.tensor(self.a[i]), "labels": torch.tensor(int(self.b[i]))}

    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=20,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=10,
    )
    model = BertForSequenceClassification(config)

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=4,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            report_to=[],
            per_device_train_batch_size=64,
            per_device_eval_batch_size=128,
            learning_rate=p["lr"],
            use_cpu=True,
            seed=SEED,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Digits(tokens[:1400], y[:1400]),
            eval_dataset=Digits(tokens[1400:], y[1400:]),
            compute_metrics=accuracy,
        )
        trainer.train()
    series: dict[str, list[tuple[int, float]]] = {}
    not_printed = ("epoch", "step", "total_flos")
    for entry in trainer.state.log_history:
        epoch = entry["epoch"]
        for key, value in entry.items():
            if key in not_printed or not isinstance(value, (int, float)):
                continue
            series.setdefault(key, []).append((round(epoch), value))
    _write_truth(
        truth,
        "Trainer.state.log_history (entries at integral epochs; `step` and "
        "`total_flos` are in log_history but not printed)",
        series,
    )


def run_lightning(p: dict[str, Any], truth: str) -> None:
    import lightning as L  # noqa: N812 (Lightning's own convention)
    import torch
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    x, y = load_wine(return_X_y=True)
    xs = torch.tensor(StandardScaler().fit_transform(x), dtype=torch.float32)
    ys = torch.tensor(y)
    perm = torch.randperm(len(xs), generator=torch.Generator().manual_seed(SEED))
    train_idx, val_idx = perm[:130], perm[130:]

    class Net(L.LightningModule):
        def __init__(self, lr: float) -> None:
            super().__init__()
            self.lr = lr
            self.net = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))

        def training_step(self, batch: Any, _: int) -> Any:
            xb, yb = batch
            loss = nn.functional.cross_entropy(self.net(xb), yb)
            self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            xb, yb = batch
            out = self.net(xb)
            self.log("val_loss", nn.functional.cross_entropy(out, yb), prog_bar=True)
            self.log("val_acc", (out.argmax(1) == yb).float().mean(), prog_bar=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    L.seed_everything(SEED)

    def loader(idx: Any, shuffle: bool) -> Any:
        ds = torch.utils.data.TensorDataset(xs[idx], ys[idx])
        return torch.utils.data.DataLoader(ds, batch_size=16, shuffle=shuffle)

    bar = RichProgressBar() if p["bar"] == "rich" else TQDMProgressBar()
    with tempfile.TemporaryDirectory() as out:
        logger = CSVLogger(out, name="csv", version=0)
        trainer = L.Trainer(
            max_epochs=6,
            accelerator="cpu",
            logger=logger,
            callbacks=[bar],
            enable_progress_bar=True,
            enable_checkpointing=False,
            log_every_n_steps=1,
        )
        trainer.fit(Net(p["lr"]), loader(train_idx, True), loader(val_idx, False))
        with (Path(logger.log_dir) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("epoch", "step") or value in ("", None):
                continue
            series.setdefault(key, []).append((int(row["epoch"]) + 1, float(value)))
    shown = (
        "every epoch"
        if p["bar"] == "tqdm"
        else "the last epoch only (Rich prints its final frame when not on a terminal)"
    )
    _write_truth(
        truth,
        "Lightning CSVLogger metrics.csv; epoch e (0-based) is epoch e+1",
        series,
        printed_epochs="all" if p["bar"] == "tqdm" else "last",
        note=f"the bar shows {shown}",
    )


def run_sklearn(p: dict[str, Any], truth: str) -> None:
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.preprocessing import StandardScaler

    common = {
        "hidden_layer_sizes": (p["hidden"],),
        "learning_rate_init": p["lr"],
        "max_iter": 15,
        "verbose": True,
        "random_state": SEED,
        "solver": p.get("solver", "adam"),
        "n_iter_no_change": 50,
    }
    if p["kind"] == "classifier":
        x, y = load_digits(return_X_y=True)
        model = MLPClassifier(early_stopping=p.get("early_stopping", False), **common).fit(
            x / 16.0, y
        )
    else:
        x, y = load_diabetes(return_X_y=True)
        x = StandardScaler().fit_transform(x)
        model = MLPRegressor(early_stopping=p.get("early_stopping", False), **common).fit(
            x, y / 100.0
        )
    series = {"loss": list(enumerate(model.loss_curve_, 1))}
    if getattr(model, "validation_scores_", None) is not None:
        series["validation_score"] = list(enumerate(model.validation_scores_, 1))
    _write_truth(truth, "loss_curve_ and validation_scores_; index k is iteration k+1", series)


def run_torchloop(p: dict[str, Any], truth: str) -> None:
    """A plain PyTorch loop printing one line per epoch: JSON lines or Katib's name=value."""
    import torch
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    x, y = load_iris(return_X_y=True)
    xs = torch.tensor(StandardScaler().fit_transform(x), dtype=torch.float32)
    ys = torch.tensor(y)
    torch.manual_seed(SEED)
    perm = torch.randperm(len(xs))
    tr, va = perm[:110], perm[110:]
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=p["lr"])
    fmt, counter = p["format"], p.get("counter", "epoch")
    print(
        f"training on iris: {len(tr)} train, {len(va)} validation, learning rate {p['lr']}",
        flush=True,
    )
    series: dict[str, list[tuple[int, float]]] = {}
    for epoch in range(1, 9):
        model.train()
        total, correct, seen = 0.0, 0, 0
        for i in range(0, len(tr), 16):
            idx = tr[i : i + 16]
            out = model(xs[idx])
            loss = nn.functional.cross_entropy(out, ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
            correct += int((out.argmax(1) == ys[idx]).sum())
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            out = model(xs[va])
            val_loss = float(nn.functional.cross_entropy(out, ys[va]))
            val_acc = float((out.argmax(1) == ys[va]).float().mean())
        train_loss, train_acc = total / seen, correct / seen
        if fmt == "jsonl":
            record = {
                counter: epoch,
                "train": {"loss": train_loss, "accuracy": train_acc},
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": p["lr"],
                "phase": "epoch_end",
                "improved": bool(epoch == 1 or val_loss < min(v for _, v in series["val_loss"])),
            }
            print(json.dumps(record), flush=True)
            values = {
                "train.loss": train_loss,
                "train.accuracy": train_acc,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": p["lr"],
            }
        else:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            print(
                f"{stamp} epoch={epoch} loss={train_loss:.6f} accuracy={train_acc:.6f} "
                f"Validation-loss={val_loss:.6f} Validation-accuracy={val_acc:.6f}",
                flush=True,
            )
            values = {
                "loss": train_loss,
                "accuracy": train_acc,
                "Validation-loss": val_loss,
                "Validation-accuracy": val_acc,
            }
        for key, value in values.items():
            series.setdefault(key, []).append((epoch, value))
    print("done", flush=True)
    _write_truth(truth, "the values the loop computed (and printed)", series)


RUNNERS = {
    "xgboost": run_xgboost,
    "lightgbm": run_lightgbm,
    "keras": run_keras,
    "transformers": run_transformers,
    "lightning": run_lightning,
    "sklearn": run_sklearn,
    "torchloop": run_torchloop,
}

# ------------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------------


def job_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIDECAR_", "FORCE_", "TTY_", "PYTHONWARNINGS"))
    }
    env.update(
        {
            "KERAS_BACKEND": "torch",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    for name in ("NO_COLOR", "COLUMNS", "LINES", "TERM"):  # as in a container: no terminal, no size
        env.pop(name, None)
    return env


def run_job(suite: str, runner: str, name: str, params: dict[str, Any], cwd: Path) -> None:
    folder = HERE / suite
    log, truth = folder / f"{name}.log", folder / f"{name}.truth.json"
    print(f"  {suite}/{name}", flush=True)
    with log.open("wb") as out:
        proc = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--run",
                runner,
                json.dumps(params),
                str(truth),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=job_env(),
            cwd=cwd,
            check=False,
            timeout=600,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{suite}/{name} failed ({proc.returncode}); see {log}")
    doc = json.loads(truth.read_text())
    doc = {"suite": suite, "job": name, "params": params, **doc}
    truth.write_text(json.dumps(doc, indent=1) + "\n")


def write_config(suite: str, preset: str, objective: tuple[str, str], note: str) -> None:
    metric, kind = objective
    text = (
        f"# {note}\n"
        f"tuning_job: sample-{suite}\n"
        f"objective: {{metric: '{metric}', type: {kind}}}\n"
        f"preset: {preset}\n"
        f"early_stopping: {{type: Auto, min_jobs: 2, start_epoch: 2}}\n"
    )
    (HERE / suite / "config.yaml").write_text(text)


def suite_manifest(
    suite: str, preset: str, objective: tuple[str, str], printed: dict[str, Any], logs: list[str]
) -> None:
    doc = {
        "suite": suite,
        "preset": preset,
        "objective": {"metric": objective[0], "type": objective[1]},
        "format": "plain",
        "printed": printed,
        "logs": logs,
    }
    (HERE / suite / "suite.json").write_text(json.dumps(doc, indent=1) + "\n")


def generate_suite(suite: str, spec: dict[str, Any], cwd: Path) -> None:
    folder = HERE / suite
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, params in spec["jobs"]:
        run_job(suite, spec["runner"], name, params, cwd)
    logs = [f"{name}.log" for name, _ in spec["jobs"]]
    write_config(
        suite,
        spec["preset"],
        spec["objective"],
        f"{len(logs)} {spec['runner']} jobs of one tuning job (sample_logs/generate.py)",
    )
    suite_manifest(suite, spec["preset"], spec["objective"], spec["printed"], logs)


def cloudwatch(raw: bytes) -> bytes:
    """CloudWatch's view of a log: each tab shown as `#011`."""
    return raw.replace(b"\t", b"#011")


def generate_derived(suite: str, spec: dict[str, Any]) -> None:
    source = HERE / spec["from"]
    folder = HERE / suite
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest = json.loads((source / "suite.json").read_text())
    for log in manifest["logs"]:
        (folder / log).write_bytes(cloudwatch((source / log).read_bytes()))
        stem = log.removesuffix(".log")
        shutil.copyfile(source / f"{stem}.truth.json", folder / f"{stem}.truth.json")
    write_config(
        suite,
        spec["preset"],
        spec["objective"],
        f"the {spec['from']} jobs as CloudWatch shows them (tabs as #011), with AWS's definitions",
    )
    suite_manifest(suite, spec["preset"], spec["objective"], manifest["printed"], manifest["logs"])


def _timestamps(start: dt.datetime) -> Any:
    t = start
    while True:
        yield t
        t += dt.timedelta(microseconds=1234)


def docker_json(raw: bytes, start: dt.datetime, limit: int = 16 * 1024) -> bytes:
    """Docker's json-file driver: one record per line, lines over 16 KiB split into records without `\\n`."""
    out = []
    clock = _timestamps(start)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        text = line.decode("utf-8", "replace") + "\n"
        encoded = text.encode()
        pieces = [encoded[i : i + limit] for i in range(0, len(encoded), limit)]
        for piece in pieces:
            stamp = next(clock).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
            out.append(
                json.dumps(
                    {"log": piece.decode("utf-8", "replace"), "stream": "stdout", "time": stamp},
                    ensure_ascii=False,
                ).encode()
            )
    return b"\n".join(out) + b"\n"


def cri(raw: bytes, start: dt.datetime, limit: int = 16 * 1024) -> bytes:
    """The CRI format kubelet writes: `<time> <stream> P|F <text>`, lines over 16 KiB in P chunks."""
    out = []
    clock = _timestamps(start)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        chunks = [line[i : i + limit] for i in range(0, len(line), limit)] or [b""]
        for i, chunk in enumerate(chunks):
            tag = b"F" if i == len(chunks) - 1 else b"P"
            stamp = next(clock).strftime("%Y-%m-%dT%H:%M:%S.%f").encode() + b"123Z"
            out.append(stamp + b" stdout " + tag + b" " + chunk)
    return b"\n".join(out) + b"\n"


def generate_formats() -> None:
    folder = HERE / "formats"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 123456)
    entries = []
    for suite, job in FORMAT_COPIES:
        if not (HERE / suite / f"{job}.log").exists():
            continue
        raw = (HERE / suite / f"{job}.log").read_bytes()
        preset = SUITES[suite]["preset"]
        for fmt, convert, ext in (
            ("docker-json", docker_json, "docker.log"),
            ("cri", cri, "cri.log"),
        ):
            name = f"{suite}--{job}.{ext}"
            (folder / name).write_bytes(convert(raw, start))
            entries.append(
                {
                    "log": name,
                    "format": fmt,
                    "preset": preset,
                    "original": f"{suite}/{job}.log",
                    "truth": f"{suite}/{job}.truth.json",
                    "printed": SUITES[suite]["printed"],
                }
            )
    (folder / "formats.json").write_text(json.dumps({"copies": entries}, indent=1) + "\n")


def expected_replay(suite: str, sidecar: str) -> None:
    folder = HERE / suite
    manifest = json.loads((folder / "suite.json").read_text())
    if not shutil.which(sidecar) and not Path(sidecar).exists():
        print(f"  ! no sidecar at {sidecar}: {suite}/expected_replay.json not written")
        return
    config = "config.yaml"
    proc = subprocess.run(
        [sidecar, "replay", "-c", config, "--json", *manifest["logs"]],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
    )
    if proc.returncode != 0:
        print(f"  ! replay of {suite} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
        return
    doc = json.loads(proc.stdout)
    (folder / "expected_replay.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_versions() -> None:
    from importlib.metadata import PackageNotFoundError, distributions, version

    names = sorted({n for ns in FRAMEWORK_PACKAGES.values() for n in ns})
    lines = [
        "# Versions the sample logs were generated with (sample_logs/generate.py), CPU only.",
        f"python {sys.version.split()[0]} ({sys.platform})",
        "",
        "# frameworks",
    ]
    for name in names:
        try:
            lines.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            lines.append(f"# {name}: not installed")
    lines += ["", "# everything in the generation environment"]
    lines += sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()}, key=str.lower)
    lines.append(f"# generated {dt.date.today().isoformat()}")
    (HERE / "VERSIONS.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "suites", nargs="*", help=f"suites to regenerate (default: all): {', '.join(SUITES)}"
    )
    parser.add_argument(
        "--sidecar",
        default=str(REPO / ".venv" / "bin" / "sidecar"),
        help="the sidecar executable used for expected_replay.json",
    )
    parser.add_argument(
        "--replays-only",
        action="store_true",
        help="run no framework: only rewrite every expected_replay.json with --sidecar",
    )
    parser.add_argument(
        "--run", nargs=3, metavar=("RUNNER", "PARAMS", "TRUTH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.run:
        runner, params, truth = args.run
        RUNNERS[runner](json.loads(params), truth)
        return
    if args.replays_only:
        for suite in [*SUITES, *DERIVED]:
            if (HERE / suite / "suite.json").exists():
                expected_replay(suite, args.sidecar)
        return
    unknown = [s for s in args.suites if s not in SUITES and s not in DERIVED]
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(unknown)}")
    chosen = args.suites or [*SUITES, *DERIVED]
    # frameworks that write files beside them (lightning_logs/, ...) do it in a scratch directory
    with tempfile.TemporaryDirectory() as cwd:
        for suite in chosen:
            if suite in SUITES:
                print(f"{suite}:", flush=True)
                generate_suite(suite, SUITES[suite], Path(cwd))
    for suite, spec in DERIVED.items():
        if suite in chosen or spec["from"] in chosen:
            generate_derived(suite, spec)
    generate_formats()
    for suite in [*SUITES, *DERIVED]:
        if (HERE / suite / "suite.json").exists():
            expected_replay(suite, args.sidecar)
    write_versions()
    total = sum(f.stat().st_size for f in HERE.rglob("*") if f.is_file())
    print(f"sample_logs: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
