"""Training on two CPU processes (Lightning DDP, gloo): the validation loss equals the one-process value, the trained
weights come back to the caller, and the ranks draw different training windows.

Tolerances: the validation loss of the same weights agrees to rtol 1e-6 (float32 sums in another order); after a
few training steps the two runs have seen different windows (two streams, twice the windows per step), so their best
validation losses only need to agree within 25 %.
"""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel
from xlstm_ts.datasets.windows import WindowSampler, tail_windows

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32",
                                reason="needs torch.distributed and, on CPU-only machines, the fork start method")

COMMON = dict(prediction_length=6, context_length=24, model="tiny", batch_size=8, val_size=18, random_state=0)
# fork starts at once, but not from a process that has initialized CUDA, which Lightning does in any fit on a
# machine with a GPU (it saves and restores the CUDA random state); spawn works everywhere
TWO = {"devices": 2, "strategy": "ddp_spawn" if torch.cuda.is_available() else "ddp_fork", "accelerator": "cpu"}


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=3, length=150, seed=1)


def logged_val_losses(log_dir: str) -> np.ndarray:
    with open(Path(log_dir) / "metrics.csv") as f:
        return np.array([float(row["val_loss"]) for row in csv.DictReader(f) if row.get("val_loss")])


def tail_loss(forecaster: XLSTMForecaster) -> float:
    batch = tail_windows(forecaster.panel_.values, 24, 6, 18)
    with torch.no_grad():
        return forecaster.net_.loss(**batch).item()


def test_validation_loss_of_the_same_weights_matches_one_process(panel, tmp_path):
    # learning rate 0 keeps the initial weights, so every validation scores them; 3 x 13 = 39 windows split 19/20
    kw = dict(COMMON, learning_rate=0.0, max_steps=2, val_check_steps=1)
    one = XLSTMForecaster(**kw, log_dir=tmp_path / "one").fit(panel)
    two = XLSTMForecaster(**kw, log_dir=tmp_path / "two", trainer_kwargs=TWO).fit(panel)
    v1, v2 = logged_val_losses(one.log_dir_), logged_val_losses(two.log_dir_)
    assert len(v1) == len(v2) == 2
    np.testing.assert_allclose(v2, v1, rtol=1e-6)
    np.testing.assert_allclose(v1, tail_loss(one), rtol=1e-6)  # all windows at once, in the calling process


def test_two_processes_train_and_return_the_best_weights(panel):
    kw = dict(COMMON, learning_rate=1e-2, max_steps=12, val_check_steps=4)
    init = XLSTMForecaster(**dict(kw, learning_rate=0.0)).fit(panel)
    one = XLSTMForecaster(**kw).fit(panel)
    two = XLSTMForecaster(**kw, trainer_kwargs=TWO).fit(panel)
    assert two.best_step_ in (4, 8, 12), "the two-process fit kept the initial weights"
    changed = [not torch.equal(a, b) for a, b in zip(init.net_.state_dict().values(), two.net_.state_dict().values())]
    assert any(changed)
    assert np.isfinite(two.best_val_loss_) and two.best_val_loss_ < init.best_val_loss_
    assert tail_loss(two) == pytest.approx(two.best_val_loss_, rel=1e-5)  # the caller holds rank 0's best weights
    assert two.best_val_loss_ == pytest.approx(one.best_val_loss_, rel=0.25)
    out = two.predict()
    assert out.shape == (3 * 6, 6) and np.isfinite(out[["mean", "q0.1", "q0.9"]].to_numpy()).all()


def test_ranks_draw_different_windows(panel, monkeypatch):
    series = [g.y.to_numpy(np.float32) for _, g in panel.groupby("unique_id")]
    sampler = WindowSampler(series, 24, 6, batch_size=16, seed=0)
    alone = next(iter(sampler))["past_target"]
    draws = {}
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None, rank=rank: rank)
        draws[rank] = next(iter(sampler))["past_target"]
    assert torch.equal(draws[0], alone)  # rank 0 keeps the one-process stream
    assert not torch.equal(draws[0], draws[1])


def test_fork_after_cuda_initialization_is_refused_with_a_fix(panel, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    trainer_kwargs = {"devices": 2, "strategy": "ddp_fork", "accelerator": "cpu"}
    with pytest.raises(RuntimeError, match="ddp_spawn"):
        XLSTMForecaster(**COMMON, max_steps=2, trainer_kwargs=trainer_kwargs).fit(panel)


SCRIPT = """
import atexit
import os

import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel


def record_exit():  # registered first, so it runs after every handler that fit registers
    with open(f"exit{os.environ.get('LOCAL_RANK', '0')}.txt", "w") as out:
        out.write(str(torch.distributed.is_initialized()))


atexit.register(record_exit)

panel = make_synthetic_panel(n_series=3, length=150, seed=1)
f = XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", batch_size=8, val_size=18,
                    val_check_steps=4, max_steps=16, learning_rate=3e-3, early_stopping_patience=1,
                    trainer_kwargs={"devices": 2, "strategy": "ddp", "accelerator": "cpu"}).fit(panel)
rank = os.environ.get("LOCAL_RANK", "0")
with open(f"rank{rank}.txt", "w") as out:  # one file per rank: their prints would interleave on the shared stdout
    out.write(f"{f.best_val_loss_} {f.best_step_} {f.train_loss_} {f.predict()['mean'].sum()}")
"""


def test_ddp_strategy_from_a_script(tmp_path):
    # "ddp" starts the second rank by running the script again; both ranks finish the script
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best0, step0, train0, pred0 = (tmp_path / "rank0.txt").read_text().split()
    best1, step1, train1, pred1 = (tmp_path / "rank1.txt").read_text().split()
    assert (best0, step0, pred0) == (best1, step1, pred1)  # same decisions, same restored weights on both ranks
    assert int(step0) > 0  # trained
    assert train0 != train1  # each rank trained on its own windows
    # the process group is gone before interpreter finalization, where gloo's threads could abort the process
    assert (tmp_path / "exit0.txt").read_text() == (tmp_path / "exit1.txt").read_text() == "False"
