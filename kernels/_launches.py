"""Count the device-kernel launches of a call: torch ops that run device work, plus Triton kernel launches.

A structural measure, not a timing: on a GPU every counted item is (at least) one kernel launch, so a forward or
backward built from many small torch ops shows up here long before a profiler is at hand. It runs anywhere,
including on the CPU with Triton's interpreter, because it counts at the dispatcher and at the Triton launch site:

- torch: every aten op seen by a `TorchDispatchMode`, except views and uninitialized allocations (`empty*`),
  which launch nothing;
- Triton: every `kernel[grid](...)` call, counted once per launch (an autotuned kernel counts its chosen run only).

Examples:
    >>> import torch
    >>> with LaunchCounter() as launches:
    ...     y = (torch.ones(3) * 2).sum()
    >>> launches.total, dict(launches.torch_ops)
    (3, {'aten.ones.default': 1, 'aten.mul.Tensor': 1, 'aten.sum.default': 1})
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that only allocate without writing (no kernel runs)
_NO_LAUNCH = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias"}


def _launches_device_work(func) -> bool:
    """False for views (every output aliases an input, read-only) and uninitialized allocations, else True."""
    returns = func._schema.returns
    is_view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
    return not (is_view or func.overloadpacket.__name__ in _NO_LAUNCH)


class _OpCounter(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts
        self.paused = False  # set while a Triton launch runs: the interpreter's own torch copies are not counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and _launches_device_work(func):
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


class LaunchCounter:
    """Context manager that counts torch ops (dispatcher level) and Triton launches inside its block.

    Backward passes run inside the block are counted too: the autograd engine carries the dispatch mode along.

    Attributes:
        torch_ops: {aten op name: count} of the ops that launch device work.
        triton: {kernel name: count} of Triton launches.
        launch_grids: {kernel name: [grid, ...]} of the Triton launches through `kernel[grid]`, in launch order.
    """

    def __init__(self) -> None:
        self.torch_ops: Counter = Counter()
        self.triton: Counter = Counter()
        self.launch_grids: dict[str, list] = {}
        self._mode = _OpCounter(self.torch_ops)
        self._getitem = None

    @property
    def total(self) -> int:
        """All counted launches, torch and Triton."""
        return sum(self.torch_ops.values()) + sum(self.triton.values())

    def __enter__(self) -> LaunchCounter:
        try:
            from triton.runtime.jit import KernelInterface
        except ImportError:  # torch-only install: nothing to hook
            KernelInterface = None
        if KernelInterface is not None:
            self._getitem = KernelInterface.__getitem__
            getitem, counts, mode, grids = self._getitem, self.triton, self._mode, self.launch_grids

            def counting_getitem(kernel, grid):
                launch = getitem(kernel, grid)
                name = getattr(getattr(kernel, "fn", None), "__name__", type(kernel).__name__)

                def counted(*args, **kwargs):
                    counts[name] += 1
                    grids.setdefault(name, []).append(grid if callable(grid) else tuple(grid))
                    mode.paused = True
                    try:
                        return launch(*args, **kwargs)
                    finally:
                        mode.paused = False

                return counted

            KernelInterface.__getitem__ = counting_getitem
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
        if self._getitem is not None:
            from triton.runtime.jit import KernelInterface

            KernelInterface.__getitem__ = self._getitem
            self._getitem = None

    def grids(self, name: str) -> list:
        """The grids of the counted launches of Triton kernel `name` through `kernel[grid]` (a callable grid as
        given), in launch order; [] if it was not launched that way."""
        return list(self.launch_grids.get(name, []))

    def summary(self) -> str:
        """One line: the total, then each op or kernel with its count."""
        parts = [f"{name} x{n}" for name, n in (self.triton + self.torch_ops).most_common()]
        return f"{self.total} launches: " + ", ".join(parts)
