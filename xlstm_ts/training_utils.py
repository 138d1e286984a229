"""Training helpers of the forecaster: the Lightning trainer (logger, progress display), quiet runs, validation
loaders, validation loss, the least-squares start of the linear skip, compiling the blocks; checking settings.

What a fit shows and writes:
- verbose=False (default): nothing on screen, no files, unless `log_dir` asks for a CSV log.
- verbose=True: Lightning's progress bar in interactive runs (a terminal, a Jupyter notebook); elsewhere (pipes,
  files, CI logs, where a bar would smear carriage returns) one line every tenth of the steps. Lightning's info
  messages and the model summary are shown.
- Logs go through Lightning loggers: a `lightning.pytorch.loggers.CSVLogger` writes `metrics.csv` (train_loss,
  val_loss, learning rate) to `log_dir/version_N/` when `log_dir` is given, or to `./lightning_logs/version_N/` when
  only verbose=True is; each fit gets a new version, so earlier logs are never overwritten. Any Lightning logger
  (TensorBoard, W&B, ...) or False can be passed as trainer_kwargs={"logger": ...} instead.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import SingleDeviceStrategy

from xlstm_ts.config import ModelConfig, resolve_config
from xlstm_ts.datasets.windows import WindowSampler
from xlstm_ts.heads import HEADS, check_quantiles
from xlstm_ts.lightning_module import RestoreBestWeights
from xlstm_ts.model import XLSTMForecastNet
from xlstm_ts.stack import XLSTMStack


def check_params(est) -> tuple[int, int, tuple[float, ...], ModelConfig]:
    """Validate the settings of the XLSTMForecaster `est`; returns (horizon, context, quantile levels, config)."""
    for name in ("prediction_length", "max_steps", "batch_size"):
        value = getattr(est, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    context = 4 * est.prediction_length if est.context_length is None else est.context_length
    if est.head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {est.head!r}.")
    if not isinstance(est.val_size, (int, np.integer)) or est.val_size < 0:
        raise ValueError(f"val_size must be a non-negative integer, got {est.val_size!r}.")
    if est.val_size and est.val_size < est.prediction_length:
        raise ValueError(f"val_size ({est.val_size}) must be 0 or at least prediction_length "
                         f"({est.prediction_length}) so the tail holds one full forecast window.")
    if est.float32_matmul_precision not in (None, "highest", "high", "medium"):
        raise ValueError(f"float32_matmul_precision must be 'highest', 'high', 'medium' or None, got "
                         f"{est.float32_matmul_precision!r}.")
    for name in ("compile", "cuda_graphs"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {getattr(est, name)!r}.")
    if est.ema_decay is not None and not (
        isinstance(est.ema_decay, (float, int, np.floating)) and 0.0 < est.ema_decay < 1.0
    ):
        raise ValueError(f"ema_decay must be None or a number between 0 and 1 (exclusive), e.g. 0.999; got "
                         f"{est.ema_decay!r}.")
    if not isinstance(context, (int, np.integer)) or context < 1:
        raise ValueError(f"context_length must be a positive integer or None, got {est.context_length!r}.")
    return int(est.prediction_length), int(context), check_quantiles(est.quantiles), resolve_config(est.model)


def interactive() -> bool:
    """True in a terminal or a Jupyter kernel (a live progress bar renders there), False in pipes, files, CI logs."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if type(shell).__name__ == "ZMQInteractiveShell":
        return True
    return sys.stdout.isatty()


class PrintProgress(L.Callback):
    """Prints `step k/n  train_loss ...  val_loss ...` every `every` steps and at the last one."""

    def __init__(self, every: int):
        self.every = max(1, every)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or (step % self.every and step != trainer.max_steps):
            return
        metrics = "  ".join(f"{name} {float(trainer.callback_metrics[name]):.4f}"
                            for name in ("train_loss", "val_loss") if name in trainer.callback_metrics)
        print(f"step {step}/{trainer.max_steps}  {metrics}", flush=True)


def make_trainer(forecaster, validate: bool) -> tuple[L.Trainer, RestoreBestWeights | None]:
    """The Lightning trainer of a fit, and the best-weights callback when a validation tail is scored."""
    verbose, steps = bool(forecaster.verbose), forecaster.max_steps
    callbacks, best = [], None
    if validate:
        best = RestoreBestWeights("val_loss")
        callbacks.append(best)
        if forecaster.early_stopping_patience is not None:
            callbacks.append(EarlyStopping("val_loss", patience=forecaster.early_stopping_patience,
                                           check_on_train_epoch_end=False))
    bar = verbose and interactive()
    if verbose and not bar:
        callbacks.append(PrintProgress(steps // 10))
    extra = dict(forecaster.trainer_kwargs or {})
    root = Path(extra.pop("default_root_dir", Path.cwd()))
    logger = extra.pop("logger", None)
    if logger is None and (forecaster.log_dir is not None or verbose):
        logger = CSVLogger(forecaster.log_dir, name="") if forecaster.log_dir is not None \
            else CSVLogger(root, name="lightning_logs")
    if logger:
        callbacks.append(LearningRateMonitor("step"))
    kwargs = dict(max_steps=steps, logger=logger or False, log_every_n_steps=max(1, min(50, steps // 20)),
                  enable_checkpointing=False, enable_progress_bar=bar, enable_model_summary=verbose,
                  gradient_clip_val=forecaster.gradient_clip_val, accelerator="cpu", devices=1,
                  default_root_dir=str(root), num_sanity_val_steps=0,
                  # with several processes each rank scores a share of every validation batch (see LitForecaster);
                  # a DistributedSampler would hand ranks whole batches and pad them with repeats
                  use_distributed_sampler=False,
                  val_check_interval=min(forecaster.val_check_steps, steps) if validate else None,
                  check_val_every_n_epoch=None if validate else 1)
    kwargs["callbacks"] = callbacks + list(extra.pop("callbacks", []))
    kwargs.update(extra)
    return L.Trainer(**kwargs), best


def quantile_column(level: float) -> str:
    """Column name of a quantile level in forecast frames: 0.1 -> 'q0.1'."""
    return f"q{level:g}"


# hints about this package's own loaders and module that users cannot act on: hidden in every run
NOISE = (r".*does not have many workers.*", r".*LeafSpec.*is deprecated.*",
         r".*defined a `validation_step` but have no `val_dataloader`.*",
         r".*AccumulateGrad node's stream does not match.*")  # torch's hint under DDP on GPUs


@contextlib.contextmanager
def matmul_precision(setting: str | None):
    """torch.set_float32_matmul_precision(setting) inside the block when CUDA is available, restored after; a no-op
    for None and without CUDA (CPU results do not depend on it)."""
    if setting is None or not torch.cuda.is_available():
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextlib.contextmanager
def quiet(verbose: bool):
    """Hide Lightning's hints that do not apply here (always), and its info logs and hardware hints (unless
    `verbose`)."""
    loggers = [] if verbose else [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in NOISE if verbose else (*NOISE, r".*GPU available but not used.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def validation_batch_size(trainer: L.Trainer) -> int:
    """Windows per validation batch: 1024 on GPUs; 256 on the CPU, where the intermediates of a smaller batch stay
    in cache (ETTh1 H=96 validation windows, `ltsf_center`, 2-core CPU, 4 alternating runs: median 6.0 s against
    7.0 s at 1024). The validation loss is a window-weighted mean, so the size changes only its rounding."""
    return 1024 if isinstance(trainer.accelerator, CUDAAccelerator) else 256


def batch_loader(batch: dict[str, torch.Tensor], size: int = 1024) -> torch.utils.data.DataLoader:
    """A loader that yields a big batch dict in slices of `size` windows (for validation)."""
    n = len(batch["past_target"])
    chunks = [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]
    return torch.utils.data.DataLoader(chunks, batch_size=None, shuffle=False)


@contextlib.contextmanager
def evaluating(net: torch.nn.Module):
    """The network in eval mode without autograd for the block; its training mode comes back after."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        net.train(was_training)


def mean_loss(net: XLSTMForecastNet, loader: torch.utils.data.DataLoader) -> float:
    """The network's loss over a validation loader, weighted by batch size as Lightning logs it; batches go to the
    network's device."""
    device = next(net.parameters()).device
    total, count = 0.0, 0
    with evaluating(net):
        for batch in loader:
            n = len(batch["past_target"])
            total += float(net.loss(**{k: v.to(device) for k, v in batch.items()})) * n
            count += n
    return total / max(count, 1)


def training_device(trainer: L.Trainer, cuda: bool = False) -> torch.device:
    """The device a single-device trainer trains on; the CPU for multi-process strategies, whose calling process
    must not touch the GPU before the workers start (forked workers cannot use a CUDA context of their parent).
    With cuda=True (the forecaster's cuda_graphs) anything but one CUDA device is an error."""
    single = isinstance(trainer.strategy, SingleDeviceStrategy)
    device = trainer.strategy.root_device if single else torch.device("cpu")
    if cuda and (not single or device.type != "cuda"):
        raise ValueError(
            f"cuda_graphs=True needs a fit on one CUDA device, got the {type(trainer.strategy).__name__} on "
            f"{device}; pass trainer_kwargs={{'accelerator': 'gpu', 'devices': 1}}, or set cuda_graphs=False."
        )
    return device


def compile_network(net: torch.nn.Module, trainer: L.Trainer) -> None:
    """torch.compile every block of every xLSTM stack in `net`, in place, on the device it trains on.

    Single-device trainers only: multi-process strategies pickle or fork the network, which compiled blocks do not
    survive."""
    if not isinstance(trainer.strategy, SingleDeviceStrategy):
        raise ValueError(
            f"compile=True needs a single-device fit, got the {type(trainer.strategy).__name__}; drop the "
            "multi-process strategy from trainer_kwargs, or set compile=False."
        )
    for module in net.modules():
        if isinstance(module, XLSTMStack):
            module.compile_blocks()


def skip_scorer(net: XLSTMForecastNet, loader: torch.utils.data.DataLoader) -> Callable[[], float]:
    """`mean_loss(net, loader)` as a function to call after each change of the linear skip (the ridge choice).

    Without covariates the skip changes only `net.readout`, so the loader's batches go through `net.encode` (patch
    encoder and xLSTM stack) once, here, and each call runs only the readout; with covariates (whose horizon map the
    ridge fit sets too) each call is a full `mean_loss`."""
    if net.covariates is not None:
        return lambda: mean_loss(net, loader)
    device = next(net.parameters()).device
    with evaluating(net):
        cached = [(len(b["past_target"]), net.encode(b["past_target"].to(device), b["past_observed"].to(device)),
                   b["future_target"].to(device), b["future_observed"].to(device)) for b in loader]

    def score() -> float:
        with evaluating(net):
            total = sum(float(net.loss_of(net.readout(*enc), target, observed)) * n
                        for n, enc, target, observed in cached)
        return total / max(sum(n for n, *_ in cached), 1)

    return score


def linear_start(net: XLSTMForecastNet, sampler: WindowSampler, val_loader: torch.utils.data.DataLoader | None,
                 seed: int) -> tuple[float | None, float | None]:
    """Start the network's linear skip at the ridge least-squares map on (up to 100k) training windows, on the
    network's device; with several ridges in the config and a validation loader, keep the one whose start has the
    lowest validation loss. Returns the ridge kept (None without an 'lstsq' skip) and the validation loss of the
    network as it now is (None without a validation loader)."""
    if val_loader is None:
        return _linear_start(net, sampler, None, seed), None
    score = skip_scorer(net, val_loader)
    return _linear_start(net, sampler, score, seed), score()


def _linear_start(net: XLSTMForecastNet, sampler: WindowSampler, score: Callable[[], float] | None,
                  seed: int) -> float | None:
    cfg = net.cfg
    if not cfg.linear_skip or cfg.linear_skip_init != "lstsq":
        return None
    device = next(net.parameters()).device
    windows = sampler.sample(100_000, np.random.default_rng([seed, 1]))
    return net.fit_linear_skip(**{k: v.to(device) for k, v in windows.items()}, ridge=cfg.linear_skip_ridge,
                               score=score)
