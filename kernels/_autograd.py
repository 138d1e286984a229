"""Calls of our autograd Functions that autograd does not record: the Function's forward without `apply`.

`Function.apply` costs host time even when no input needs a gradient (it wraps every argument, builds a graph node
context and checks the outputs): on a 2-core CPU, a bf16 mlstm_chunkwise--triton call without gradients at
(64, 4, 512, 64) took 70-89 us of host time through `apply` and 36-40 us without it (launches recorded, not run).
For short calls on a GPU that host time is the call's time.
"""

from __future__ import annotations

import torch
from torch import Tensor


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd records a call on these tensors (None entries are skipped)."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


class _NoGradContext:
    """The part of an autograd Function's ctx that our forwards use, for a call autograd does not record."""

    needs_input_grad = (False,) * 16

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


def forward_only(fn: type[torch.autograd.Function], *args):
    """`fn.apply(*args)` for a call that needs no gradient (`needs_grad` False): the Function's forward alone. The
    forward may set attributes on its ctx (read only by its backward, which never runs) and must not use any other
    ctx method than those of `_NoGradContext`."""
    return fn.forward(_NoGradContext(), *args)
