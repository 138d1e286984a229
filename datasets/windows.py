"""Training and inference windows cut from a list of series.

A series is a float32 array of shape (S,) (univariate) or (S, C) (C variates sharing one time index, for the
variate-mixing mode). Windows of univariate series have shape (B, L); windows of multivariate ones (B, C, L).
Univariate series may come with `Covariates`; their windows then add the batch keys "past_covariates" and
"past_covariates_observed" (B, K, L), "future_covariates" (B, Kf, F) and "static_covariates" (B, Ks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass
class Covariates:
    """Covariates of a list of N univariate series, in the series' order.

    Attributes:
        dynamic: One float32 array (S, K) per series, rows aligned with the series (NaN = missing): every covariate
            known over the context, past-only columns first, then the `n_future` columns also known over the horizon.
        n_future: Kf, the trailing columns of `dynamic` that are known over the forecast horizon too.
        static: (N, Ks) float32 static features, or None.
        future: (N, Kf, F) values of the known-future columns over the horizon after each series (prediction only;
            training windows cut them from `dynamic`), or None.
    """

    dynamic: list[np.ndarray]
    n_future: int = 0
    static: np.ndarray | None = None
    future: np.ndarray | None = None

    def before(self, cuts: list[int], horizon: int) -> Covariates:
        """The covariates of the series cut before row `cuts[i]`, with the `horizon` rows after each cut as
        `future`."""
        future = None
        if self.n_future:
            future = np.stack([_known_future(d[c:c + horizon], self.n_future).T
                               for d, c in zip(self.dynamic, cuts)])  # (N, Kf, F)
        return replace(self, dynamic=[d[:c] for d, c in zip(self.dynamic, cuts)], future=future)

    def rows(self, start: int, stop: int) -> Covariates:
        """The covariates of series start .. stop - 1."""
        pick = lambda a: None if a is None else a[start:stop]
        return replace(self, dynamic=self.dynamic[start:stop], static=pick(self.static), future=pick(self.future))


def covariate_batch(past: np.ndarray, future: np.ndarray | None, static: np.ndarray | None,
                    ) -> dict[str, torch.Tensor]:
    """Batch entries of covariate windows: past (B, L, K), future (B, F, Kf) or None, static (B, Ks) or None."""
    out = {}
    if past.shape[-1]:
        past = np.ascontiguousarray(np.moveaxis(past, 2, 1))  # (B, K, L)
        out["past_covariates"] = torch.from_numpy(np.nan_to_num(past, nan=0.0))
        out["past_covariates_observed"] = torch.from_numpy((~np.isnan(past)).astype(np.float32))
    if future is not None and future.shape[-1]:
        out["future_covariates"] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(future, 2, 1)))  # (B, Kf, F)
    if static is not None:
        out["static_covariates"] = torch.from_numpy(np.ascontiguousarray(static, dtype=np.float32))  # (B, Ks)
    return out


def _known_future(horizon: np.ndarray, n_future: int) -> np.ndarray | None:
    """The known-future (last `n_future`) columns of covariate rows over the horizon: (B, F, K) -> (B, F, Kf)."""
    return horizon[..., horizon.shape[-1] - n_future:] if n_future else None


def left_pad(values: np.ndarray, length: int) -> np.ndarray:
    """The last `length` rows, left-padded with NaN when the series is shorter. Shape (length,) or (length, C)."""
    out = np.full((length, *values.shape[1:]), np.nan, dtype=np.float32)
    tail = values[-length:] if length > 0 else values[:0]
    out[length - len(tail):] = tail
    return out


def _pad_front(values: np.ndarray, length: int) -> np.ndarray:
    """`length` NaN rows, then the rows of `values`, as float32: (S, ...) -> (length + S, ...)."""
    return np.concatenate([np.full((length, *values.shape[1:]), np.nan, np.float32), values.astype(np.float32)])


def _stack_padded(series: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """The series, each front-padded by `length` NaN rows, stacked along time, and the row where each one starts."""
    padded = [_pad_front(v, length) for v in series]
    starts = np.concatenate([[0], np.cumsum([len(p) for p in padded])[:-1]]).astype(np.int64)
    return np.concatenate(padded), starts


def _channels_first(windows: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(N, T) stays; (N, T, C) -> (N, C, T): a contiguous array, or a view of a tensor."""
    if windows.ndim != 3:
        return windows
    if isinstance(windows, torch.Tensor):
        return windows.movedim(2, 1)
    return np.ascontiguousarray(np.moveaxis(windows, 2, 1))


def context_windows(series: list[np.ndarray], context_length: int,
                    covariates: Covariates | None = None) -> dict[str, torch.Tensor]:
    """The last context window of each series, as a model batch.

    Returns:
        {"past_target": (N, L) or (N, C, L) with NaN replaced by 0, "past_observed": float mask of the same shape},
        plus the covariate entries (their horizon values come from `covariates.future`).
    """
    past = _channels_first(np.stack([left_pad(v, context_length) for v in series]))  # (N, L) or (N, C, L)
    observed = ~np.isnan(past)
    batch = {
        "past_target": torch.from_numpy(np.nan_to_num(past, nan=0.0)),
        "past_observed": torch.from_numpy(observed.astype(np.float32)),
    }
    if covariates is not None:
        if covariates.n_future and covariates.future is None:
            raise ValueError("Forecasting with known-future covariates needs their values over the horizon "
                             "(Covariates.future of shape (N, Kf, F)); got none.")
        past_cov = np.stack([left_pad(d, context_length) for d in covariates.dynamic])  # (N, L, K)
        future = None if covariates.future is None else np.moveaxis(covariates.future, 1, 2)  # (N, F, Kf)
        batch.update(covariate_batch(past_cov, future, covariates.static))
    return batch


class WindowSampler(torch.utils.data.IterableDataset):
    """An endless stream of random training batches (past context + future target) from a list of series.

    A window ends its context at a cut point `t` (exclusive) and its target covers `t .. t + F - 1`. Cut points are
    drawn uniformly over all (series, t) pairs with at least `min_past` observed steps before the cut and a full
    target after it, so long series are sampled in proportion to their length. Context before a series' start is
    NaN-padded and masked.

    Args:
        series: One float32 array per series (NaN = missing).
        context_length: L, steps of context per window.
        prediction_length: F, steps of target per window.
        batch_size: Windows per batch.
        seed: Seed of the window sampler (the stream is fully determined by it and, inside a torch.distributed
            process group, by the process rank).
        min_past: Minimum number of past steps before a cut point. Default: 1.
        holdout: Steps at the end of every series that no training target may reach (a validation tail).
        covariates: Covariates of univariate series (windows then carry them too), or None.
    """

    def __init__(self, series: list[np.ndarray], context_length: int, prediction_length: int, batch_size: int,
                 seed: int = 0, min_past: int = 1, holdout: int = 0, covariates: Covariates | None = None):
        super().__init__()
        if holdout > 0:
            series = [v[:len(v) - holdout] for v in series]
            if covariates is not None:
                covariates = replace(covariates, dynamic=[d[:len(d) - holdout] for d in covariates.dynamic])
        self.context_length = context_length
        self.prediction_length = prediction_length
        self.batch_size = batch_size
        self.seed = seed
        lengths = np.array([len(v) for v in series])
        n_cuts = lengths - prediction_length - min_past + 1  # cut points per series
        usable = n_cuts > 0
        if not usable.any():
            raise ValueError(
                f"No series is long enough for training: need at least {min_past + prediction_length} rows "
                f"(min_past={min_past} + prediction_length={prediction_length}) before the validation holdout of "
                f"{holdout}, the longest has {lengths.max()}. Lower prediction_length/val_size or use longer series."
            )
        self._extra = series[0].shape[1:]  # () or (C,)
        if any(v.shape[1:] != self._extra for v in series):
            raise ValueError(f"All series must have the same number of variates; got shapes "
                             f"{sorted({v.shape[1:] for v in series})}.")
        # each series padded on the left with L NaNs so any context slice is in range, all in one array so that a
        # batch is one gather: series s starts at row _starts[s] of _flat
        self._flat, self._starts = _stack_padded(series, context_length)  # (sum(L + S), ...), (N,)
        self._series_idx = np.flatnonzero(usable)
        self._offsets = np.concatenate([[0], np.cumsum(n_cuts[usable])])
        self._min_past = min_past
        self.covariates = covariates
        self._flat_on_device: torch.Tensor | None = None  # _flat on the device that batches are made on
        if covariates is not None:
            self._flat_cov, _ = _stack_padded(covariates.dynamic, context_length)  # (sum(L + S), K)

    def to(self, device: torch.device | str) -> WindowSampler:
        """Make batches on `device`: the series go there once and each batch is gathered there (same values as on
        the CPU). Windows with covariates stay on the CPU. Returns self."""
        self._flat_on_device = None if self.covariates is not None else torch.from_numpy(self._flat).to(device)
        return self

    @property
    def num_windows(self) -> int:
        """Number of distinct training windows."""
        return int(self._offsets[-1])

    def batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One random batch: past_target, past_observed (B, L) and future_target, future_observed (B, F); with
        C variates (B, C, L) and (B, C, F); with covariates also their entries (see the module docstring)."""
        return self.windows(rng.integers(0, self.num_windows, size=self.batch_size))

    def sample(self, max_windows: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Every distinct window if there are at most `max_windows`, else `max_windows` drawn without replacement."""
        if self.num_windows <= max_windows:
            return self.windows(np.arange(self.num_windows))
        return self.windows(np.sort(rng.choice(self.num_windows, size=max_windows, replace=False)))

    def windows(self, flat: np.ndarray) -> dict[str, torch.Tensor]:
        """The windows with the given flat indices in [0, num_windows), as a batch dict."""
        L, F = self.context_length, self.prediction_length
        which = np.searchsorted(self._offsets, flat, side="right") - 1
        cuts = flat - self._offsets[which] + self._min_past  # cut point in original series coordinates
        rows = self._series_idx[which]
        # padded index t + L == original t: a window is rows t .. t + L + F - 1 of its padded series
        first = self._starts[rows] + cuts  # (B,)
        if self._flat_on_device is not None:  # one gather on the device, no per-batch host work or copy
            device = self._flat_on_device.device
            index = torch.from_numpy(first).to(device)[:, None] + torch.arange(L + F, device=device)  # (B, L + F)
            window = self._flat_on_device[index]  # (B, L + F, ...)
        else:
            index = first[:, None] + np.arange(L + F)  # (B, L + F)
            window = self._flat[index]  # (B, L + F, ...)
        batch = _to_batch(_channels_first(window[:, :L]), _channels_first(window[:, L:]))
        if self.covariates is not None:
            cov = self._flat_cov[index]  # (B, L + F, K)
            static = None if self.covariates.static is None else self.covariates.static[rows]
            batch.update(covariate_batch(cov[:, :L], _known_future(cov[:, L:], self.covariates.n_future), static))
        return batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        # one stream per (process rank, loader worker): the ranks of a multi-process fit draw different windows
        rng = np.random.default_rng([self.seed, worker + n_workers * rank])
        while True:
            yield self.batch(rng)


def _to_batch(past: np.ndarray | torch.Tensor, future: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Targets with NaN as 0 and float observed masks, contiguous, on the device of tensor inputs (CPU for arrays).
    past (B, [C,] L), future (B, [C,] F) float32, NaN = missing or padding."""
    past, future = torch.as_tensor(past), torch.as_tensor(future)
    return {
        "past_target": torch.nan_to_num(past, nan=0.0).contiguous(),  # (B, [C,] L)
        "past_observed": (~past.isnan()).float().contiguous(),  # (B, [C,] L)
        "future_target": torch.nan_to_num(future, nan=0.0).contiguous(),  # (B, [C,] F)
        "future_observed": (~future.isnan()).float().contiguous(),  # (B, [C,] F)
    }


def sliding_windows(values: np.ndarray, context_length: int, prediction_length: int, start: int, stop: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Every window whose target starts in [start, stop - F], stride 1.

    Args:
        values: (S, C) array of C channels (a 1-D array is treated as one channel).
        start, stop: Row range of the evaluation split; contexts may reach `context_length` rows before `start`.

    Returns:
        past (N * C, L) and future (N * C, F), ordered window-major then channel, with N = stop - start - F + 1.
    """
    values = values[:, None] if values.ndim == 1 else values
    L, F = context_length, prediction_length
    if start < L:
        raise ValueError(f"The split starts at row {start}, but a context of {L} rows needs start >= {L}.")
    view = np.lib.stride_tricks.sliding_window_view(values[start - L:stop], L + F, axis=0)  # (N, C, L+F)
    view = view.reshape(-1, L + F)
    return view[:, :L].astype(np.float32), view[:, L:].astype(np.float32)


def tail_windows(series: list[np.ndarray], context_length: int, prediction_length: int, tail: int,
                 stride: int = 1, covariates: Covariates | None = None) -> dict[str, torch.Tensor]:
    """Every window whose target lies inside the last `tail` steps of its series (cut points every `stride` steps,
    the last one always included). Used for validation: the training sampler stops before the tail.

    Returns:
        A batch dict as `WindowSampler.batch`, with N = sum over series of the cut points.
    """
    L, F = context_length, prediction_length
    if tail < F:
        raise ValueError(f"The validation tail ({tail} steps) must hold at least one horizon of {F} steps.")
    pasts, futures, covs, statics = [], [], [], []
    for k, values in enumerate(series):
        n = len(values)
        if n < tail + 1:
            continue
        cuts = np.arange(n - F, n - tail - 1, -stride)[::-1]  # cut points, the last one is n - F
        idx = cuts[:, None] + np.arange(L + F)[None, :]  # padded coordinates of [t - L, t + F)
        win = _channels_first(_pad_front(values, L)[idx])  # (n_cuts, L + F) or (n_cuts, C, L + F)
        pasts.append(win[..., :L])
        futures.append(win[..., L:])
        if covariates is not None:
            covs.append(_pad_front(covariates.dynamic[k], L)[idx])  # (n_cuts, L + F, K)
            if covariates.static is not None:
                statics.append(np.repeat(covariates.static[k:k + 1], len(cuts), axis=0))  # (n_cuts, Ks)
    if not pasts:
        raise ValueError(f"No series is longer than the validation tail ({tail} steps); lower val_size.")
    batch = _to_batch(np.concatenate(pasts), np.concatenate(futures))
    if covariates is not None:
        cov = np.concatenate(covs)  # (N, L + F, K)
        future = _known_future(cov[:, L:], covariates.n_future)
        batch.update(covariate_batch(cov[:, :L], future, np.concatenate(statics) if statics else None))
    return batch
