"""Training steps captured as CUDA graphs and replayed: the whole step with its optimizer (`GraphedTrainStep`), or
a network's loss forward and backward for a loop that steps the optimizer itself (`GraphedLoss`).

At the short, wide shapes of patched forecasters a compiled xLSTM step spends more time launching kernels than
running them; replaying a captured graph launches the whole step at once (`benchmarks/train_step.py` times both,
results in `benchmarks/results/train_step.md`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

_ADAM = (torch.optim.Adam, torch.optim.AdamW)


class GraphedTrainStep:
    """Capture `loss_fn(model, *inputs)` + backward + `optimizer.step()` on CUDA and replay it per batch.

    The inputs are copied into static buffers of the example batch's shapes and dtypes; every call must bring
    the same shapes (drop or pad a last, smaller batch). Capturing runs `warmup` steps on the example batch on a
    side stream first (kernels compile and allocate there); the parameters and the optimizer state are then put
    back as they were, so the first replay is the first real step. The learning rate is captured as it is when the
    step is built: for a schedule, build the optimizer with a tensor learning rate (`lr=torch.tensor(1e-3)`) and
    change that tensor in place.

    Args:
        model: the module, on CUDA, in training mode.
        optimizer: torch.optim.Adam or AdamW over the model's parameters, built with capturable=True.
        loss_fn: (model, *inputs) -> scalar loss tensor; no host synchronisation inside (no .item(), no printing
            of tensors, no data-dependent Python branching).
        example_inputs: tensors on the model's device with the shapes and dtypes of every later batch.
        autocast_dtype: run the forward under torch.autocast with this dtype (e.g. torch.bfloat16), or None.
        warmup: eager steps before capturing. Default: 3.

    Example:
        >>> opt = torch.optim.AdamW(net.parameters(), lr=1e-3, capturable=True)
        >>> step = GraphedTrainStep(net, opt, lambda m, x, y: (m(x) - y).pow(2).mean(), (x0, y0))
        >>> for x, y in batches:
        ...     loss = step(x, y)  # a CUDA tensor; read it with float(loss) only when needed
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[..., torch.Tensor], example_inputs: tuple[torch.Tensor, ...],
                 autocast_dtype: torch.dtype | None = None, warmup: int = 3):  # fmt: skip
        params = [p for p in model.parameters() if p.requires_grad]
        _check(params, optimizer, example_inputs)
        self.model, self.optimizer, self.loss_fn, self.autocast_dtype = model, optimizer, loss_fn, autocast_dtype
        self.inputs = tuple(x.detach().clone() for x in example_inputs)
        saved = _snapshot(params, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's memory pool
        with torch.cuda.graph(self.graph):
            self.loss = self._step(zero_grad=False)
        _restore(params, optimizer, saved)

    def _step(self, zero_grad: bool = True) -> torch.Tensor:
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        dtype = self.autocast_dtype
        # no autocast weight cache: cached casts would be captured once and go stale when the weights change
        with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False):
            loss = self.loss_fn(self.model, *self.inputs)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run one captured step on `inputs` (same shapes and dtypes as the example); returns the loss (a copy)."""
        if len(inputs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs like the example batch, got {len(inputs)}.")
        for idx, (static, x) in enumerate(zip(self.inputs, inputs)):
            if x.shape != static.shape or x.dtype != static.dtype:
                raise ValueError(
                    f"input {idx} has shape {tuple(x.shape)} and dtype {x.dtype}, the captured step takes "
                    f"{tuple(static.shape)} {static.dtype}; drop or pad a smaller last batch, or build another "
                    "GraphedTrainStep for this shape."
                )
            static.copy_(x, non_blocking=True)
        self.graph.replay()
        return self.loss.clone()


def _check(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, inputs: tuple[torch.Tensor, ...]) -> None:
    if not isinstance(optimizer, _ADAM) or not all(g.get("capturable") for g in optimizer.param_groups):
        raise ValueError(
            f"GraphedTrainStep needs torch.optim.Adam or AdamW built with capturable=True, got "
            f"{type(optimizer).__name__} (capturable={optimizer.defaults.get('capturable')}); e.g. "
            "torch.optim.AdamW(model.parameters(), lr=1e-3, capturable=True)."
        )
    if not params or any(p.device.type != "cuda" for p in params):
        raise ValueError(
            "GraphedTrainStep captures CUDA graphs: the model's trainable parameters must be on a CUDA device, got "
            f"{params[0].device if params else 'no trainable parameters'}; on the CPU call the model and optimizer "
            "directly."
        )
    device = params[0].device
    if not inputs or any(not isinstance(x, torch.Tensor) or x.device != device for x in inputs):
        raise ValueError(f"example_inputs must be a non-empty tuple of tensors on {device}, like the model.")


def _snapshot(params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> tuple[list, dict]:
    """Copies of the parameters and of the optimizer state that exists now."""
    state = {id(t): t.detach().clone() for s in optimizer.state.values() for t in s.values()
             if isinstance(t, torch.Tensor)}  # fmt: skip
    return [p.detach().clone() for p in params], state


@torch.no_grad()
def _restore(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, saved: tuple[list, dict]) -> None:
    """Put parameters and optimizer state back in place (the graph holds their addresses). State the warm-up steps
    created is zeroed: zero moments and step count are Adam's starting state."""
    values, state = saved
    for p, v in zip(params, values):
        p.copy_(v)
    for s in optimizer.state.values():
        for t in s.values():
            if isinstance(t, torch.Tensor):
                t.copy_(state[id(t)]) if id(t) in state else t.zero_()


class GraphedLoss:
    """`net.loss(**batch)` with its forward and backward captured as CUDA graphs, for a loop that steps the optimizer
    itself (Lightning's): the forecaster's `cuda_graphs=True`.

    Built on the first training batch (torch.cuda.make_graphed_callables, 3 warm-up passes that change no weights);
    each later training batch of the same keys, shapes and dtypes is copied into the graph's inputs and the captured
    kernels replay, forward and backward, with the gradients accumulating into the parameters as usual. A batch of
    other shapes, a change of autocast, and eval mode run `net.loss` as it is.
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self._graphed: nn.Module | None = None
        self._signature: tuple | None = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.net.training:
            return self.net.loss(**batch)
        keys = tuple(sorted(batch))
        autocast = torch.is_autocast_enabled("cuda")
        signature = (keys, tuple((tuple(batch[k].shape), batch[k].dtype) for k in keys), autocast)
        # cached autocast casts would be captured once and go stale when the weights change
        with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=autocast, cache_enabled=False):
            if self._graphed is None:
                sample = tuple(batch[k].detach() for k in keys)
                self._graphed = torch.cuda.make_graphed_callables(_KeywordLoss(self.net, keys), sample,
                                                                  allow_unused_input=True)  # fmt: skip
                self._signature = signature
            if signature != self._signature:
                return self.net.loss(**batch)
            # the graph's output buffer is overwritten by the next replay: hand out a copy (it keeps its backward)
            return self._graphed(*(batch[k] for k in keys)).clone()


class _KeywordLoss(nn.Module):
    """net.loss with the batch's tensors as positional arguments in a fixed key order (what graph capture takes)."""

    def __init__(self, net: nn.Module, keys: tuple[str, ...]):
        super().__init__()
        self.net, self.keys = net, keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.net.loss(**dict(zip(self.keys, tensors)))
