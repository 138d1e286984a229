"""Training windows gathered on the training device: the series go to the device once, and each batch is one gather
there, instead of a gather on the CPU and a host-to-device copy of every batch."""

from __future__ import annotations

import numpy as np
import torch


class DeviceWindows:
    """Front-padded series (see `WindowSampler`) on a device, cut into batches of windows there.

    Args:
        flat: (T, ...) float32 array of the padded series stacked along time (NaN = missing or padding).
        device: where the series live and the batches are made.
    """

    def __init__(self, flat: np.ndarray, device: torch.device | str):
        self.device = torch.device(device)
        self.flat = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32)).to(self.device)  # (T, ...)

    def gather(self, first: np.ndarray, context_length: int, prediction_length: int) -> dict[str, torch.Tensor]:
        """The windows whose first row (padded coordinates) is `first` (B,): the batch dict of `WindowSampler.batch`
        with the same values, on the device."""
        L, F = context_length, prediction_length
        first = torch.from_numpy(np.asarray(first, dtype=np.int64)).to(self.device)  # (B,)
        index = first[:, None] + torch.arange(L + F, device=self.device)  # (B, L + F)
        window = self.flat[index]  # (B, L + F) or (B, L + F, C)
        if window.dim() == 3:
            window = window.transpose(1, 2)  # (B, C, L + F): channels first
        past, future = window[..., :L], window[..., L:]
        return {
            "past_target": torch.nan_to_num(past, nan=0.0).contiguous(),  # (B, [C,] L)
            "past_observed": (~past.isnan()).float().contiguous(),  # (B, [C,] L)
            "future_target": torch.nan_to_num(future, nan=0.0).contiguous(),  # (B, [C,] F)
            "future_observed": (~future.isnan()).float().contiguous(),  # (B, [C,] F)
        }
