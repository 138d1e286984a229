"""Training helpers of the forecaster: quiet Lightning runs, validation loaders, validation loss."""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch

from xlstm_ts.model import XLSTMForecastNet


def quantile_column(level: float) -> str:
    """Column name of a quantile level in forecast frames: 0.1 -> 'q0.1'."""
    return f"q{level:g}"


@contextlib.contextmanager
def quiet(verbose: bool):
    """Silence Lightning's info logs and hint warnings unless `verbose`."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def batch_loader(batch: dict[str, torch.Tensor], size: int = 1024) -> torch.utils.data.DataLoader:
    """A loader that yields a big batch dict in slices of `size` windows (for validation)."""
    n = len(batch["past_target"])
    chunks = [{k: v[i:i + size] for k, v in batch.items()} for i in range(0, n, size)]
    return torch.utils.data.DataLoader(chunks, batch_size=None, shuffle=False)


@torch.no_grad()
def mean_loss(net: XLSTMForecastNet, loader: torch.utils.data.DataLoader) -> float:
    """The network's loss over a validation loader, weighted by batch size as Lightning logs it."""
    was_training = net.training
    net.eval()
    total, count = 0.0, 0
    for batch in loader:
        n = len(batch["past_target"])
        total += float(net.loss(**batch)) * n
        count += n
    net.train(was_training)
    return total / max(count, 1)
