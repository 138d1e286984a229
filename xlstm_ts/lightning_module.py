"""LightningModule: training loop glue around `XLSTMForecastNet` (no data logic here)."""

from __future__ import annotations

import math

import lightning as L
import torch

from xlstm_ts.distributed import shard_bounds
from xlstm_ts.graphed_step import GraphedLoss
from xlstm_ts.model import XLSTMForecastNet


class LitForecaster(L.LightningModule):
    """Trains the network with AdamW and a linear-warmup cosine learning-rate schedule over `max_steps`; with
    cuda_graphs, the training loss's forward and backward replay as CUDA graphs (`xlstm_ts.graphed_step.GraphedLoss`;
    one CUDA device).

    With `ema_decay`, an exponential moving average of the parameters is kept (avg = decay avg + (1 - decay) param
    after every optimizer step, starting from the initial weights): validation scores the averaged weights, which
    are in the network from `on_validation_start` to `on_validation_end` (callbacks' `on_validation_end`, such as
    `RestoreBestWeights`, run before this module's and see them), and the network ends training with them.
    """

    def __init__(self, net: XLSTMForecastNet, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 max_steps: int = 1000, warmup_fraction: float = 0.05, cuda_graphs: bool = False,
                 ema_decay: float | None = None):  # fmt: skip
        super().__init__()
        self.net = net
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.max_steps, self.warmup_fraction = max_steps, warmup_fraction
        self.graphed_loss = GraphedLoss(net) if cuda_graphs else None
        self.ema_decay = ema_decay
        self._ema: list[torch.Tensor] | None = None  # the averaged parameters, in net.parameters() order

    def on_train_start(self) -> None:
        if self.ema_decay is not None and self._ema is None:
            self._ema = [p.detach().clone() for p in self.net.parameters()]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._ema, [p.detach() for p in self.net.parameters()], 1.0 - self.ema_decay)

    def _swap_ema(self) -> None:
        """Exchange the network's parameters with the averaged ones (in place: CUDA graphs keep their storage)."""
        if self._ema is None:
            return
        with torch.no_grad():
            for param, avg in zip(self.net.parameters(), self._ema):
                held = param.detach().clone()
                param.copy_(avg)
                avg.copy_(held)

    def on_validation_start(self) -> None:
        self._swap_ema()

    def on_validation_end(self) -> None:
        self._swap_ema()

    def on_train_end(self) -> None:
        """The network keeps the averaged parameters (`RestoreBestWeights` then loads the best validated ones)."""
        if self._ema is not None:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.net.parameters()], self._ema)
            self._ema = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.net.loss(**batch) if self.graphed_loss is None else self.graphed_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch["past_target"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss * windows, windows

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """Scores this rank's share of the batch (all of it in one process); every rank sees every batch, so the
        processes run the same number of forward passes."""
        lo, hi = shard_bounds(len(batch["past_target"]), self.global_rank, self.trainer.world_size)
        if hi == lo:
            return None
        loss = self.net.loss(**{k: v[lo:hi] for k, v in batch.items()})
        self._val_totals += torch.stack([loss.detach().double() * (hi - lo), self._val_totals.new_tensor(hi - lo)])
        return loss

    def on_validation_epoch_end(self) -> None:
        """val_loss: the window-weighted mean over all validation windows, summed over the ranks."""
        loss_sum, windows = self.trainer.strategy.reduce(self._val_totals, reduce_op="sum")
        # equal on every rank already; sync_dist averages equal values (Lightning asks for it on epoch-level logs)
        self.log("val_loss", (loss_sum / windows.clamp(min=1)).float(), prog_bar=True, sync_dist=True)

    def _clips_mixed_precision(self) -> bool:
        """Whether the trainer clips gradients under mixed precision ('16-mixed', 'bf16-mixed'): Lightning's
        mixed-precision plugin then refuses fused optimizers, which unscale fp16 gradients inside their step."""
        trainer = self._trainer
        return str(getattr(trainer, "precision", "")).endswith("-mixed") and bool(
            getattr(trainer, "gradient_clip_val", None)
        )

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.net.named_parameters():
            if param.requires_grad:  # frozen ones (a fixed linear skip) stay out of the optimizer
                (decay if param.ndim >= 2 and "recurrent" not in name else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.learning_rate,
            fused=fused_adamw_supported(decay + no_decay) and not self._clips_mixed_precision(),
        )
        warmup = max(1, int(self.warmup_fraction * self.max_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, self.max_steps - warmup))
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class RestoreBestWeights(L.Callback):
    """Keeps a CPU copy of the network weights with the lowest `monitor` value and loads it when training ends."""

    def __init__(self, monitor: str = "val_loss"):
        self.monitor = monitor
        self.best_score = math.inf
        self.best_step = -1
        self._state: dict[str, torch.Tensor] | None = None

    def seed(self, score: float, net: torch.nn.Module) -> None:
        """Record the initial weights with their validation score (step 0) as the first candidate."""
        self.best_score, self.best_step = score, 0
        self._state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        # rank 0's value decides on every rank (the all-reduced loss is equal already; this keeps ranks in step)
        score = trainer.strategy.broadcast(float(trainer.callback_metrics[self.monitor]), src=0)
        if score < self.best_score:
            self.best_score, self.best_step = score, trainer.global_step
            self._state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._state is not None:
            pl_module.net.load_state_dict(self._state)
        # spawn and fork strategies return callback_metrics (not callbacks) to the calling process: see `recover`
        trainer.callback_metrics.update(best_val_loss=torch.tensor(self.best_score, dtype=torch.float64),
                                        best_step=torch.tensor(self.best_step))

    def recover(self, trainer: L.Trainer) -> None:
        """Take the best score and step from the trainer's metrics (set by the process that trained)."""
        metrics = trainer.callback_metrics
        if "best_step" in metrics:
            self.best_score, self.best_step = float(metrics["best_val_loss"]), int(metrics["best_step"])


FUSED_DEVICES = ("cpu", "cuda")
"""Device types whose parameters AdamW updates with its fused kernel (one kernel for all parameters instead of the
per-list foreach ops; same update): on a 2-core CPU an AdamW step over the 124 k and 437 k parameters of the
`benchmarks/train_step.py` stacks took 0.33 and 0.39 ms fused against 1.67 and 2.01 ms with the foreach default."""


def fused_adamw_supported(params: list[torch.Tensor]) -> bool:
    """Whether every parameter is a floating-point tensor on one of the `FUSED_DEVICES`, all on one device."""
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in FUSED_DEVICES
        and all(p.is_floating_point() for p in params)
    )
