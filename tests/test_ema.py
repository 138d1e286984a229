"""Weight averaging (`XLSTMForecaster(ema_decay=...)`): the average follows its recursion from the initial weights,
validation scores it, the restored best weights are averaged ones, and a fit without validation ends with the
average."""

import lightning as L
import pytest
import torch

from xlstm_ts import XLSTMForecaster
from xlstm_ts.datasets import make_synthetic_panel
from xlstm_ts.datasets.windows import tail_windows


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=3, length=150, seed=1)


class RawWeights(L.Callback):
    """Copies of the trained (not averaged) parameters: before the first step and after every step."""

    def __init__(self):
        self.copies = []

    def _copy(self, pl_module):
        self.copies.append([p.detach().clone() for p in pl_module.net.parameters()])

    def on_train_start(self, trainer, pl_module):
        self._copy(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._copy(pl_module)


class ValidatedWeights(L.Callback):
    """(step, parameters) that each validation scored; a callback's on_validation_end runs before the module's."""

    def __init__(self):
        self.copies = []

    def on_validation_end(self, trainer, pl_module):
        self.copies.append((trainer.global_step, [p.detach().clone() for p in pl_module.net.parameters()]))


def _averages(raw: list, decay: float) -> list:
    """The averaged parameters after each step (index 0: the initial weights) by the recursion."""
    out = [raw[0]]
    for step in raw[1:]:
        out.append([decay * e + (1 - decay) * p for e, p in zip(out[-1], step)])
    return out


def test_average_follows_its_recursion_and_ends_in_the_network(panel):
    raw, decay = RawWeights(), 0.6
    f = XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", max_steps=5, batch_size=8,
                        learning_rate=3e-2, ema_decay=decay, trainer_kwargs={"callbacks": [raw]}).fit(panel)
    assert len(raw.copies) == 6  # the initial weights and 5 steps
    expected = _averages(raw.copies, decay)[-1]
    fitted = [p.detach() for p in f.net_.parameters()]
    for e, p in zip(expected, fitted):
        torch.testing.assert_close(p, e.to(p.device), rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(p, last) for p, last in zip(fitted, raw.copies[-1]))  # not the trained weights


def test_validation_scores_the_average_and_restores_it(panel):
    common = dict(prediction_length=6, context_length=24, model="tiny", max_steps=20, batch_size=8,
                  learning_rate=3e-2, val_size=18, val_check_steps=5)  # fmt: skip
    raw, validated = RawWeights(), ValidatedWeights()
    f = XLSTMForecaster(ema_decay=0.8, trainer_kwargs={"callbacks": [raw, validated]}, **common).fit(panel)
    averages = _averages(raw.copies, 0.8)
    assert [step for step, _ in validated.copies] == [5, 10, 15, 20]
    for step, params in validated.copies:  # each validation saw the average at its step
        for p, e in zip(params, averages[step]):
            torch.testing.assert_close(p, e.to(p.device), rtol=1e-5, atol=1e-6)
    batch = tail_windows(f.panel_.values, 24, 6, 18)
    with torch.no_grad():
        loss = f.net_.loss(**batch).item()
    assert loss == pytest.approx(f.best_val_loss_, rel=1e-4)  # the restored weights are the scored ones
    plain = XLSTMForecaster(**common).fit(panel)
    if f.best_step_ > 0 and plain.best_step_ > 0:
        assert f.best_val_loss_ != pytest.approx(plain.best_val_loss_, rel=1e-6)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, "0.9", True], ids=repr)
def test_ema_decay_must_lie_between_0_and_1(panel, decay):
    with pytest.raises(ValueError, match="ema_decay"):
        XLSTMForecaster(prediction_length=6, context_length=24, model="tiny", max_steps=1, ema_decay=decay).fit(panel)
