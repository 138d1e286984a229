"""The kernel registry: names, lookup errors, and that every registered kernel runs."""

import pytest
import torch

from xlstm_ts.kernels import available_kernels, get_kernel
from xlstm_ts.kernels._testing import make_mlstm_inputs, make_mlstm_states

EXPECTED = [
    "mlstm_chunkwise--torch",
    "mlstm_parallel--torch",
    "mlstm_recurrent--torch",
    "mlstm_step--torch",
    "slstm--torch",
]


def test_available_kernels_lists_the_torch_kernels():
    names = available_kernels()
    assert names == sorted(names)
    assert set(EXPECTED) <= set(names)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown kernel name 'mlstm--nope'") as info:
        get_kernel("mlstm--nope")
    assert str(available_kernels()) in str(info.value)


@pytest.mark.parametrize("name", ["mlstm_chunkwise--torch", "mlstm_parallel--torch", "mlstm_recurrent--torch"])
def test_mlstm_sequence_kernels_run(name):
    torch.manual_seed(42)
    h = get_kernel(name)(*make_mlstm_inputs(2, 2, 6, 3, 4, dtype=torch.float32))
    assert h.shape == (2, 2, 6, 4) and torch.isfinite(h).all()


def test_mlstm_step_kernel_runs():
    torch.manual_seed(42)
    q, k, v, i, f = (x[:, :, 0] for x in make_mlstm_inputs(2, 2, 1, 3, 4, dtype=torch.float32))
    h, (C, n, m) = get_kernel("mlstm_step--torch")(q, k, v, i, f, *make_mlstm_states(2, 2, 3, 4, dtype=torch.float32))
    assert h.shape == (2, 2, 4) and C.shape == (2, 2, 3, 4) and n.shape == (2, 2, 3) and m.shape == (2, 2, 1)


def test_slstm_kernel_runs():
    torch.manual_seed(42)
    h = get_kernel("slstm--torch")(torch.randn(2, 6, 4, 2, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3))
    assert h.shape == (2, 6, 2, 3) and torch.isfinite(h).all()
