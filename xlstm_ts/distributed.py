"""Training on several processes or GPUs with Lightning DDP, and what `XLSTMForecaster.fit` does to make it exact.

Ask for it through the trainer: `XLSTMForecaster(trainer_kwargs={"devices": N, "strategy": ..., "accelerator": ...})`
with accelerator "cpu" (gloo backend) or "gpu" (nccl). Two ways to start the N processes:

- "ddp" (Lightning's script launcher; also what `torchrun --nproc-per-node N script.py` gives): the calling process
  becomes rank 0 and Lightning starts N - 1 more copies of the same command line (`python script.py ARGS`, with
  LOCAL_RANK set) that join it inside `fit`. Every rank then runs the rest of the script too, holding the same
  trained weights, so write files and print only where `int(os.environ.get("LOCAL_RANK", 0)) == 0` (one machine).
  Fastest start and the choice for GPUs. It needs a script run as `python script.py` or `python -m module`:
  under pytest the other ranks would run the whole pytest session again (every selected test), `python -c` cannot
  be run again, and Lightning refuses it in notebooks. The process group stays open after `fit` (a later `fit`
  reuses it) and is destroyed when the script exits.
- "ddp_spawn" (any platform) or "ddp_fork" / "ddp_notebook" (Linux, macOS): the calling process starts N workers
  and waits for them. Rank 0 sends back the trained (best) weights and its metrics, and `fit_trainer` restores the
  best score and step, so `fit` returns as after a one-process fit and the script runs once. Works in scripts,
  pytest and notebooks. "ddp_spawn" pickles the trainer (trainer_kwargs must be picklable), needs
  `if __name__ == "__main__":` in scripts, re-imports torch in every worker (seconds) and shows Lightning's set-up
  messages even when verbose=False. The fork variants start at once, but only from a process that has not
  initialized CUDA; on a machine with a GPU any earlier fit in the process has (Lightning saves the CUDA random
  state), so there take "ddp_spawn", or hide the GPUs (CUDA_VISIBLE_DEVICES="") to train on CPU processes.
  The tests use "ddp_fork" ("ddp_spawn" where a GPU is visible) and a script with "ddp".

What the ranks do:
- Training: `WindowSampler` keys its random stream by (seed, rank), so ranks draw different windows; each rank
  draws `batch_size` windows per step, so one optimizer step sees N * batch_size windows.
- Validation: every rank scores a contiguous share of each validation batch; the loss sums and window counts are
  all-reduced, so `val_loss` is the one-process value (up to float rounding) and is the same on every rank.
- Best weights and early stopping decide on that global value (`RestoreBestWeights` broadcasts rank 0's score), so
  every rank keeps and restores the same step and stops at the same validation.
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING

import lightning as L
import torch

if TYPE_CHECKING:
    from xlstm_ts.lightning_module import RestoreBestWeights


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of `n` that rank `rank` of `world` takes: contiguous shares that differ by at most one row."""
    return n * rank // world, n * (rank + 1) // world


def fit_trainer(trainer: L.Trainer, module: L.LightningModule, train_loader, val_loader,
                best: RestoreBestWeights | None) -> None:
    """`trainer.fit`, then the best-weights record of rank 0 in the calling process.

    Spawn and fork strategies run the callbacks in worker processes and send back only the weights and
    `callback_metrics`; the best score and step travel in those metrics. The logger's version is fixed before the
    workers start, so the calling process reports the folder they wrote to.
    """
    start_method = getattr(trainer.strategy, "_start_method", None)  # set by Lightning's DDP strategies
    if start_method == "fork" and torch.cuda.is_initialized():
        raise RuntimeError(
            f"The strategy starts its {trainer.world_size} workers with fork, but CUDA is already "
            "initialized in this process (on a machine with a GPU every earlier fit initializes it), and forked "
            'workers cannot use it. Pass trainer_kwargs={"strategy": "ddp_spawn", ...}, run a script with '
            '"ddp", or hide the GPUs with CUDA_VISIBLE_DEVICES="" before Python starts to train on CPU processes.')
    if trainer.logger is not None:
        _ = trainer.logger.version
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        destroy_process_group_at_exit()
    if best is not None:
        best.recover(trainer)


_CLEANUP_REGISTERED = False


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits, before it finalizes (registered once).

    A "ddp" script keeps the process group that Lightning opened in `fit` (a later `fit` reuses it). Left to
    interpreter finalization, gloo's worker threads may still hold tensors whose release needs the GIL, and the
    process aborts ("terminate called without an active exception", exit status -6) after the script has finished.
    Destroying the group from an `atexit` handler, while the interpreter is whole, ends those threads first.
    """
    global _CLEANUP_REGISTERED
    if not _CLEANUP_REGISTERED:
        atexit.register(_destroy_if_initialized)
        _CLEANUP_REGISTERED = True


def _destroy_if_initialized() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
