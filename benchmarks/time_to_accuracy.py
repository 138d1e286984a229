"""Time to accuracy: how long each forecaster takes to train to its best validation loss on an LTSF preset, and the
test accuracy it reaches, next to neuralforecast's xLSTM and PatchTST on the same data, in the same run.

Data and scoring follow `benchmarks/ltsf.py` (split borders, train-only StandardScaler, MSE/MAE over every test
window and variate). Every model trains on the training rows, validates on the validation rows every
`--val-check-steps` steps, stops after `--patience` validations without improvement or at `--max-steps`, and sees
the same number of (variate, window) pairs per step: the preset's batch size times the number of variates.
- `xlstm_ts`: `XLSTMForecaster` with the preset's model (ETTh1 H=96: `ltsf_mixing`); it keeps its best weights.
- `nf_patchtst`: neuralforecast `PatchTST` with its defaults (the PatchTST/64 layout: patch 16, stride 8, 3 layers,
  width 128, 16 heads, RevIN), MSE loss, `scaler_type="identity"` (the data is already scaled).
- `nf_xlstm`: neuralforecast `xLSTM` with its defaults (NX-AI `xLSTMBlockStack`, 2 mLSTM blocks, width 128, an MLP
  decoder), MSE loss. neuralforecast keeps the weights of its last step; its best validation step is read from
  `valid_trajectories`.
Columns: fit seconds (the whole fit call), seconds to the best validation step (from the start of the fit call,
validations included), steps run, best step, test MSE/MAE of the weights the model ends with, parameters, and on a
GPU the mean utilisation during the fit (NVML's share of time a kernel ran, sampled every 0.25 s).

Usage:
    python benchmarks/time_to_accuracy.py --preset etth1_96 --data-dir ../shared/datasets --accelerator gpu
    python benchmarks/time_to_accuracy.py --preset etth1_96 --max-steps 300 --val-check-steps 100   # CPU budget
Needs `pip install neuralforecast xlstm==2.0.6` for the neuralforecast rows (without them only xlstm_ts runs).
Other flags are those of `benchmarks/ltsf.py` (preset overrides); `--eval-batch-size` (windows per forward pass when
scoring, default 1024) also sets neuralforecast's `inference_windows_batch_size` (its validation and prediction
windows per pass; 1024, its default, ran a 24 GB CPU machine out of memory with the quadratic-form xLSTM at L = 512).
Appends to <out>/time_to_accuracy.json and rewrites <out>/time_to_accuracy.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xlstm_ts.datasets.ltsf import LTSFData, load_ltsf, score_windows, split_windows

import ltsf
from provenance import commit_id, device_name, merge_rows

MODELS = ("xlstm_ts", "nf_patchtst", "nf_xlstm")


def step_clock(base: type, start: float):
    """A Lightning callback (of the `base` Callback class: lightning's or pytorch_lightning's) that records the
    seconds since `start` at the end of every optimizer step in its `seconds` dict, keyed by the global step, and
    as step 0 the start of the fit (the weights before any step are ready by then: a forecaster whose validation
    keeps its initial weights reached its best there, not at the end of the fit). The dict lives outside the
    instance, so copies of the callback (neuralforecast copies its models' trainer arguments) fill the same dict."""
    seconds: dict[int, float] = {}

    class StepClock(base):
        def on_fit_start(self, trainer, pl_module):
            seconds[0] = time.perf_counter() - start

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds[int(trainer.global_step)] = time.perf_counter() - start

    StepClock.seconds = seconds

    return StepClock()


class GPUUtilisation:
    """Context manager: samples `torch.cuda.utilization()` (the share of time a kernel ran, via NVML) every 0.25 s
    while the block runs; `mean` is the average in percent, None without CUDA or NVML."""

    def __init__(self, accelerator: str):
        self.active = accelerator in ("gpu", "cuda") and torch.cuda.is_available()
        self.samples: list[float] = []
        self.mean: float | None = None

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML binding: report nothing rather than a wrong number
                return

    def __enter__(self) -> GPUUtilisation:
        if self.active:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self._stop.set()
            self._thread.join()
            self.mean = float(np.mean(self.samples)) if self.samples else None


def run_ours(args: argparse.Namespace, data: LTSFData, test: tuple[np.ndarray, np.ndarray]) -> dict:
    import lightning

    start = time.perf_counter()
    clock = step_clock(lightning.Callback, start)
    with GPUUtilisation(args.accelerator) as util:
        model = ltsf.fit_forecaster(args, data, args.seeds[0], callbacks=(clock,))
    seconds = time.perf_counter() - start
    best = model.best_step_ if model.best_step_ is not None else max(clock.seconds)
    return {"fit_seconds": seconds, "seconds_to_best": clock.seconds.get(best, seconds), "steps": max(clock.seconds),
            "best_step": best, **ltsf.score_forecaster([model], args, len(data.columns), *test),
            "params": sum(p.numel() for p in model.net_.parameters()), "gpu_util_pct": util.mean}  # fmt: skip


def run_neuralforecast(name: str, args: argparse.Namespace, data: LTSFData, test: tuple[np.ndarray, np.ndarray]):
    import pytorch_lightning
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MSE
    from neuralforecast.models import PatchTST, xLSTM

    C, (train_end, val_end, _) = len(data.columns), data.borders
    start = time.perf_counter()
    clock = step_clock(pytorch_lightning.Callback, start)
    common = dict(h=args.horizon, input_size=args.lookback, loss=MSE(), valid_loss=MSE(), max_steps=args.max_steps,
                  learning_rate=args.learning_rate, val_check_steps=args.val_check_steps,
                  early_stop_patience_steps=args.patience, batch_size=C, windows_batch_size=args.batch_size * C,
                  inference_windows_batch_size=args.eval_batch_size,
                  scaler_type="identity", random_seed=args.seeds[0], accelerator=args.accelerator, logger=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])  # fmt: skip
    spec = PatchTST(**common) if name == "nf_patchtst" else xLSTM(**common)
    frame = pd.DataFrame({"unique_id": np.repeat(np.asarray(data.columns), val_end),
                          "ds": np.tile(np.arange(val_end), C), "y": data.values[:val_end].T.reshape(-1)})  # fmt: skip
    forecaster = NeuralForecast(models=[spec], freq=1)
    with GPUUtilisation(args.accelerator) as util:
        forecaster.fit(frame, val_size=val_end - train_end)
    model = forecaster.models[0]  # the fitted copy
    seconds = time.perf_counter() - start
    trajectory = [(int(step), float(loss)) for step, loss in model.valid_trajectories]
    best = min(trajectory, key=lambda t: t[1])[0] if trajectory else max(clock.seconds)
    model.eval()
    device = next(model.parameters()).device

    @torch.no_grad()
    def predict(past: np.ndarray) -> np.ndarray:  # (b, L) -> (b, H)
        y = torch.as_tensor(past, dtype=torch.float32, device=device)[..., None]  # (b, L, 1)
        batch = {"insample_y": y, "insample_mask": torch.ones_like(y[..., 0]), "futr_exog": None,
                 "hist_exog": None, "stat_exog": None}  # fmt: skip
        return model(batch)[..., 0].float().cpu().numpy()  # (b, H)

    scores = score_windows(predict, *test, args.eval_batch_size)
    return {"fit_seconds": seconds, "seconds_to_best": clock.seconds.get(best, seconds), "steps": max(clock.seconds),
            "best_step": best, **scores, "params": sum(p.numel() for p in model.parameters()),
            "gpu_util_pct": util.mean}  # fmt: skip


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Time to accuracy", "",
             "Written by `benchmarks/time_to_accuracy.py` (setup in its docstring). Seconds to best: wall time from "
             "the start of the fit call to the optimizer step with the best validation loss (validations included); "
             "test MSE/MAE of the weights each model ends with, on z-scored data over every test window.", "",
             "| device | preset | seed | model | params | max steps / val every / patience | steps run | best step "
             "| s to best | fit s | GPU util % | test MSE | test MAE | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    util = lambda r: "–" if r.get("gpu_util_pct") is None else f"{r['gpu_util_pct']:.0f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['device']} | {r['preset']} | {r['seed']} | {r['model']} | {r['params']} | "
                     f"{r['max_steps']} / {r['val_check_steps']} / {r['patience']} | {r['steps']} | {r['best_step']} "
                     f"| {r['seconds_to_best']:.1f} | {r['fit_seconds']:.1f} | {util(r)} | {r['mse']:.4f} | "
                     f"{r['mae']:.4f} | {r['commit']} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def record(rows: list[dict], out: Path) -> Path:
    """Merge rows into out/time_to_accuracy.json (a rerun of device, preset, budget, seed and model replaces its
    row) and rewrite the markdown table."""
    key = ("device", "preset", "max_steps", "val_check_steps", "seed", "model")
    merged = merge_rows(out / "time_to_accuracy.json", rows, key)
    write_markdown(merged, out / "time_to_accuracy.md")
    return out / "time_to_accuracy.md"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False, allow_abbrev=False)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=ltsf.RESULTS)
    ours, rest = parser.parse_known_args(argv)
    args = ltsf.parse_args([*rest, "--no-record"] if "--seeds" in rest else [*rest, "--seeds", "0", "--no-record"])
    have_nf = all(importlib.util.find_spec(m) is not None for m in ("neuralforecast", "xlstm"))
    data = load_ltsf(args.data, args.split)
    test = split_windows(data, "test", args.lookback, args.horizon)  # (N * C, L), (N * C, H)
    common = {"device": device_name(args.accelerator), "preset": args.label, "seed": args.seeds[0],
              "max_steps": args.max_steps, "val_check_steps": args.val_check_steps, "patience": args.patience,
              "commit": commit_id()}  # fmt: skip
    rows = []
    for name in ours.models:
        if name != "xlstm_ts" and not have_nf:
            print(f"{name}: neuralforecast or xlstm is not installed (pip install neuralforecast xlstm==2.0.6)")
            continue
        result = run_ours(args, data, test) if name == "xlstm_ts" else run_neuralforecast(name, args, data, test)
        rows.append({**common, "model": name, **result})
        print(json.dumps(rows[-1]), flush=True)
    print(record(rows, ours.out).read_text())
    return rows


if __name__ == "__main__":
    main()
