"""The stack's fast forms compute the reference function in training: a fixed-seed fp32 run of 50 AdamW steps with
every fast path on (dense block-diagonal maps, the conv as shifted products, the default sequence kernels: the
one-chunk or chunkwise mLSTM and the hand-written sLSTM loop) against the same run with the reference forms
(block-by-block maps, nn.Conv1d, the mLSTM parallel form and autograd through the sLSTM loop)."""

import dataclasses

import pytest
import torch

from xlstm_ts import layers
from xlstm_ts.config import ModelConfig
from xlstm_ts.stack import XLSTMStack


def _losses(cfg: ModelConfig, fast: bool, monkeypatch: pytest.MonkeyPatch, steps: int = 50) -> list[float]:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(layers, "prefer_dense", lambda features, device: False)
            patch.setattr(layers, "prefer_taps", lambda kernel_size: False)
            cfg = dataclasses.replace(cfg, mlstm_kernel="mlstm_parallel--torch", slstm_kernel="slstm--torch")
        torch.manual_seed(0)
        stack = XLSTMStack(cfg)
        with torch.no_grad():  # the gate and recurrent weights start at zero, which would hide their paths
            for param in stack.parameters():
                param.add_(0.05 * torch.randn(param.shape))
        opt = torch.optim.AdamW(stack.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(6, 20, cfg.embed_dim, generator=gen)  # (B, T, D)
        target = torch.randn(6, 20, cfg.embed_dim, generator=gen)
        losses = []
        for _ in range(steps):
            loss = (stack(x) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


# chunk 64: one chunk (the one-chunk mLSTM form); chunk 8: three chunks, the last one partial
@pytest.mark.parametrize("chunk_size", [64, 8])
def test_fast_paths_train_like_the_reference_forms(chunk_size, one_thread, monkeypatch):
    cfg = ModelConfig(embed_dim=32, num_heads=4, pattern="msm", dropout=0.0, chunk_size=chunk_size)
    fast, ref = _losses(cfg, True, monkeypatch), _losses(cfg, False, monkeypatch)
    assert ref[-1] < 0.8 * ref[0]  # the run trains, so the comparison covers moving weights
    rel = max(abs(a - b) / abs(b) for a, b in zip(fast, ref, strict=True))
    assert rel < 1e-4, f"largest relative loss difference over 50 steps {rel:.2e}"
