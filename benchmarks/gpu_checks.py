"""GPU checks of the whole model: Triton path vs torch path in training, and a GPU-fitted model saved for CPU loading.

1. Parity: the same network (pattern "msm", fp32) trained 50 AdamW steps on the same batches with the torch
   reference kernels and with kernel "auto" (Triton on CUDA); per-step losses and their max relative difference.
2. Step time of both paths at a forecaster-sized shape.
3. A forecaster fitted on the GPU is saved with its forecasts, so `XLSTMForecaster.load(..., map_location="cpu")`
   can be compared on a CPU machine (see benchmarks/results/gpu_checks.md).

Usage (needs CUDA):  python benchmarks/gpu_checks.py --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.config import ModelConfig
from xlstm_ts.datasets import WindowSampler, make_synthetic_panel
from xlstm_ts.model import XLSTMForecastNet


def train_losses(cfg: ModelConfig, batches: list[dict], steps: int, L: int, F: int) -> tuple[list[float], float]:
    torch.manual_seed(0)
    net = XLSTMForecastNet(cfg, L, F, (0.1, 0.5, 0.9)).cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        batch = {k: v.cuda(non_blocking=True) for k, v in batches[step % len(batches)].items()}
        loss = net.loss(**batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    torch.cuda.synchronize()
    return losses, (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    df = make_synthetic_panel(n_series=16, length=2000, seed=0)
    series = [g.y.to_numpy() for _, g in df.groupby("unique_id")]
    L, F = 336, 96
    sampler = WindowSampler(series, L, F, batch_size=256, seed=0)
    rng = np.random.default_rng(0)
    batches = [sampler.batch(rng) for _ in range(10)]
    base = ModelConfig(patch_length=16, patch_stride=8, embed_dim=64, num_heads=4, pattern="msm", dropout=0.0)
    runs = {}
    for name, kernels in {"torch": ("mlstm_chunkwise--torch", "slstm--torch"), "auto": ("auto", "auto")}.items():
        cfg = dataclasses.replace(base, mlstm_kernel=kernels[0], slstm_kernel=kernels[1])
        train_losses(cfg, batches, 3, L, F)  # warm-up (Triton JIT)
        runs[name] = train_losses(cfg, batches, 50, L, F)
    torch_losses, auto_losses = np.array(runs["torch"][0]), np.array(runs["auto"][0])
    report["parity"] = {
        "steps": 50, "batch": 256, "context": L, "horizon": F, "pattern": "msm", "dtype": "float32 (TF32 off)",
        "max_rel_loss_diff": float(np.max(np.abs(auto_losses - torch_losses) / np.abs(torch_losses))),
        "first_last_torch": [float(torch_losses[0]), float(torch_losses[-1])],
        "first_last_auto": [float(auto_losses[0]), float(auto_losses[-1])],
        "step_ms_torch": runs["torch"][1], "step_ms_auto": runs["auto"][1],
    }
    print(json.dumps(report["parity"], indent=1), flush=True)

    train = df[df.ds < df.ds.max() - np.timedelta64(96, "h")]
    f = XLSTMForecaster(prediction_length=24, context_length=168, model="small", max_steps=200, batch_size=64,
                        trainer_kwargs={"accelerator": "gpu"}).fit(train)
    f.save(out / "gpu_model")
    f.predict().to_csv(out / "gpu_model" / "forecast_gpu.csv", index=False)
    report["saved_model"] = {"rows": len(f.predict()), "device_of_weights": str(next(f.net_.parameters()).device)}
    (out / "gpu_checks.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
