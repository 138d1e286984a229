"""Model configuration: the dataclass is the source of truth; YAML presets in `configs/model/` are serialized
instances."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from xlstm_ts.presets import check_keys, read_preset, shipped_presets

MODES = ("channel_independent", "variate_mixing")
"""How the series of a panel relate: see `ModelConfig.mode`."""
SCALINGS = ("std", "center", "mean", "none")
"""Per-window instance scalings: see `ModelConfig.scaling`."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the forecasting network: patch encoder -> xLSTM block stack -> head."""

    patch_length: int = 16
    """P: steps per patch (token)."""
    patch_stride: int | None = None
    """Steps between patch starts. Default: `patch_length` (non-overlapping patches)."""
    embed_dim: int = 64
    """D: width of the residual stream."""
    num_heads: int = 4
    """Heads of every mLSTM/sLSTM layer; `embed_dim` must be divisible by it."""
    pattern: str = "msm"
    """Block types in order: 'm' = mLSTM block (pre-up-projection), 's' = sLSTM block (post-up-projection)."""
    mlstm_proj_factor: float = 2.0
    """mLSTM block up-projection factor (inner width = factor * D, rounded up to a multiple of the heads)."""
    slstm_ffn_factor: float = 4.0 / 3.0
    """sLSTM block gated-MLP width factor."""
    conv_kernel: int = 4
    """Width of the causal depthwise convolutions."""
    qkv_blocksize: int = 4
    """Block size of the block-diagonal q/k/v projections of the mLSTM block."""
    dropout: float = 0.1
    """Dropout on block outputs and on the head input."""
    mlstm_kernel: str = "auto"
    """Registry name of the mLSTM sequence kernel, or 'auto' (see `xlstm_ts.kernels.available_kernels()`)."""
    slstm_kernel: str = "auto"
    """Registry name of the sLSTM kernel, or 'auto'."""
    chunk_size: int | None = None
    """Chunk length of chunkwise mLSTM kernels; None: each kernel's own choice (64 for the Triton kernel, by head width
    and sequence length on the CPU: `xlstm_ts.kernels.mlstm.chunkwise_torch.cpu_chunk_size`). Any value computes the
    same function; it only changes speed and rounding."""
    linear_skip: bool = True
    """Add a linear map of the scaled context to the forecast (the stack then models the residual)."""
    linear_skip_init: str = "lstsq"
    """'lstsq': start the linear skip at the ridge solution on training windows (in fit); 'random': default init."""
    linear_skip_frozen: bool = False
    """Keep the 'lstsq' skip (and the covariates' linear horizon term) at its least-squares start while training: the
    stack then fits only the residual of the ridge forecast, which training cannot move (small, shifting data sets
    such as ETTh2 let the skip drift from the start at the first steps and lose on validation)."""
    linear_skip_ridge: float | tuple[float, ...] = 1e-3
    """Ridge penalty of the 'lstsq' start, relative to the mean diagonal of the Gram matrix. Several values: with a
    validation tail (`val_size`), fit keeps the one whose start has the lowest validation loss; else the first."""
    scaling: str = "std"
    """Per-window instance scaling: 'std' (mean/std), 'center' (subtract the mean only), 'mean' (mean absolute
    value) or 'none'."""
    loss_scale: str = "window"
    """'window': the loss of each window in its own scaled units (every window counts alike); 'data': each window's
    loss times its scale (its square for the "mse" head), i.e. the loss in data units (suits series already on one
    scale, as in the long-horizon benchmarks, where the metric is computed in data units). The 'lstsq' start of the
    linear skip fits in the same units (its rows weighted by the scale squared under 'data')."""
    mode: str = "channel_independent"
    """'channel_independent': every series is forecast on its own with shared weights. 'variate_mixing': the
    series of a panel are the variates of one multivariate series (they must share their time index); after the
    temporal encoder, an xLSTM stack runs across the variate axis (both directions) so variates inform each other."""
    mixing_dim: int = 64
    """Width of the variate tokens of the mixing stack (mode 'variate_mixing')."""
    mixing_pattern: str = "s"
    """Block types of the variate-mixing stack, as `pattern`."""
    mixing_heads: int = 4
    """Heads of the variate-mixing blocks; `mixing_dim` must be divisible by it."""

    def __post_init__(self) -> None:
        bad = set(self.pattern) - {"m", "s"}
        if not self.pattern or bad:
            raise ValueError(f"ModelConfig.pattern must be a non-empty string of 'm'/'s', got {self.pattern!r}.")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ModelConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})."
            )
        for name in ("patch_length", "embed_dim", "num_heads", "conv_kernel", "qkv_blocksize"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"ModelConfig.chunk_size must be >= 1 or None (kernel's choice), got {self.chunk_size}.")
        if self.patch_stride is not None and self.patch_stride < 1:
            raise ValueError(f"ModelConfig.patch_stride must be >= 1 or None, got {self.patch_stride}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}.")
        ridges = self.linear_skip_ridge
        if isinstance(ridges, list):  # YAML lists
            object.__setattr__(self, "linear_skip_ridge", ridges := tuple(ridges))
        values = ridges if isinstance(ridges, tuple) else (ridges,)
        if not values or any(isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 0 for r in values):
            raise ValueError(f"ModelConfig.linear_skip_ridge must be a number >= 0 or a non-empty list of them, got "
                             f"{self.linear_skip_ridge!r}; e.g. 1e-3 or [1e-3, 1e-2, 0.1, 1.0].")
        if self.linear_skip_init not in ("lstsq", "random"):
            raise ValueError(
                f"ModelConfig.linear_skip_init must be 'lstsq' or 'random', got {self.linear_skip_init!r}."
            )
        if self.linear_skip_frozen and not (self.linear_skip and self.linear_skip_init == "lstsq"):
            raise ValueError(
                "ModelConfig.linear_skip_frozen keeps the least-squares start fixed, so it needs linear_skip=True and "
                f"linear_skip_init='lstsq', got linear_skip={self.linear_skip}, "
                f"linear_skip_init={self.linear_skip_init!r}."
            )
        if self.mode not in MODES:
            raise ValueError(f"ModelConfig.mode must be one of {MODES}, got {self.mode!r}.")
        if self.loss_scale not in ("window", "data"):
            raise ValueError(f"ModelConfig.loss_scale must be 'window' or 'data', got {self.loss_scale!r}.")
        if not self.mixing_pattern or set(self.mixing_pattern) - {"m", "s"}:
            raise ValueError(f"ModelConfig.mixing_pattern must be a non-empty string of 'm'/'s', "
                             f"got {self.mixing_pattern!r}.")
        if self.mixing_dim < 1 or self.mixing_heads < 1 or self.mixing_dim % self.mixing_heads:
            raise ValueError(f"ModelConfig.mixing_dim ({self.mixing_dim}) must be a positive multiple of "
                             f"mixing_heads ({self.mixing_heads}).")
        if self.scaling not in SCALINGS:
            raise ValueError(f"ModelConfig.scaling must be one of {SCALINGS}, got {self.scaling!r}.")

    @property
    def stride(self) -> int:
        return self.patch_stride or self.patch_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(data: dict, source: str = "dict") -> ModelConfig:
    """Build a ModelConfig, refusing unknown keys with a suggestion."""
    check_keys(data, ModelConfig, source)
    return ModelConfig(**data)


def preset_names() -> list[str]:
    """Names of the model presets shipped in configs/model/."""
    return shipped_presets("model")


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A ModelConfig from a preset name (e.g. 'small') or a YAML file path."""
    return config_from_dict(*read_preset("model", "model", name_or_path))


def resolve_config(model: ModelConfig | dict | str | Path) -> ModelConfig:
    """Accept a ModelConfig, a dict of its fields, a preset name or a YAML path."""
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, dict):
        return config_from_dict(model)
    if isinstance(model, (str, Path)):
        return load_config(model)
    raise TypeError(f"model must be a ModelConfig, dict, preset name or YAML path, got {type(model).__name__}.")
