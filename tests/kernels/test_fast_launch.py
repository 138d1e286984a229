"""FastLauncher: the first call of a signature goes through Triton, later ones straight to the compiled kernel.

On the CPU a stand-in kernel records which path each call took; on a GPU the mLSTM kernels must give bitwise the
same outputs and gradients with the shortcut on and off, including for a misaligned input view.
"""

import inspect

import pytest
import torch

from xlstm_ts.kernels import _fast_launch, get_kernel
from xlstm_ts.kernels._launches import LaunchCounter


class _Param:
    def __init__(self, name, constexpr, default=inspect.Parameter.empty):
        self.name, self.is_constexpr, self.default = name, constexpr, default


class _Compiled:
    function = "fn"
    packed_metadata = "meta"

    def __init__(self, log):
        self.log = log

    def run(self, g0, g1, g2, stream, function, packed, launch_meta, enter, exit_, *args):
        self.log.append(("direct", (g0, g1, g2), stream, args))


class _Kernel:
    """What FastLauncher reads of a JITFunction: params, device_caches, kernel[grid](...) returning the compiled."""

    device_caches: dict = {}

    def __init__(self):
        self.params = [_Param("x", False), _Param("n", False), _Param("eps", False),
                       _Param("BLOCK", True), _Param("FLAG", True, default=False)]  # fmt: skip
        self.log = []
        self.compiled = _Compiled(self.log)

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.log.append(("triton", grid, args, meta))
            return self.compiled

        return launch


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(_fast_launch, "_raw_stream", lambda device: 1234)


def test_signature_keys_what_triton_specializes():
    base = torch.zeros(40)
    key = _fast_launch._signature((base, 16, 1, 2.5, True))
    assert key == ((torch.float32, True), 16, 1, float, True)
    assert _fast_launch._signature((base[1:],))[0] == (torch.float32, False)  # 4-byte offset: not 16-byte aligned
    assert _fast_launch._signature((base.bfloat16(),))[0] == (torch.bfloat16, True)
    assert _fast_launch._signature((None,)) is None  # an argument kind it does not handle: Triton's own path


def test_second_call_goes_direct_with_every_parameter_in_order(fake_cuda):
    kernel = _Kernel()
    launcher = _fast_launch.FastLauncher(kernel)
    x = torch.zeros(64)
    launcher[(3, 2)](x, 64, 1e-6, BLOCK=32, num_warps=4)
    launcher[(3, 2)](x, 64, 1e-6, BLOCK=32, num_warps=4)
    assert [entry[0] for entry in kernel.log] == ["triton", "direct"]
    _, grid, stream, args = kernel.log[1]
    assert grid == (3, 2, 1) and stream == 1234
    assert args[0] is x and args[1:] == (64, 1e-6, 32, False)  # runtime args, then constexprs with defaults


@pytest.mark.parametrize(
    "change",
    ["int", "alignment", "dtype", "meta", "grid", "warps"],
)
def test_a_new_signature_goes_through_triton_first(fake_cuda, change):
    kernel = _Kernel()
    launcher = _fast_launch.FastLauncher(kernel)
    x = torch.zeros(64)
    launcher[(3,)](x, 64, 1e-6, BLOCK=32, num_warps=4)
    args, meta, grid = [x, 64, 1e-6], {"BLOCK": 32, "num_warps": 4}, (3,)
    if change == "int":
        args[1] = 65
    elif change == "alignment":
        args[0] = x[1:]
    elif change == "dtype":
        args[0] = x.double()
    elif change == "meta":
        meta["FLAG"] = True
    elif change == "grid":
        grid = (4,)
    else:
        meta["num_warps"] = 8
    launcher[grid](*args, **meta)
    assert [entry[0] for entry in kernel.log] == ["triton", "triton"]


def test_observed_launches_and_the_switch_take_tritons_path(fake_cuda, monkeypatch):
    kernel = _Kernel()
    launcher = _fast_launch.FastLauncher(kernel)
    x = torch.zeros(64)
    call = lambda: launcher[(1,)](x, 64, 1e-6, BLOCK=32)  # noqa: E731
    call()
    with LaunchCounter():  # patches kernel[grid]: every launch must reach it
        call()
    monkeypatch.setattr(_fast_launch, "ENABLED", False)
    call()
    monkeypatch.setattr(_fast_launch, "ENABLED", True)
    from triton import knobs

    with monkeypatch.context() as patch:
        patch.setattr(knobs.runtime, "launch_enter_hook", lambda *a: None)  # a profiler's hook
        call()
    assert [entry[0] for entry in kernel.log] == ["triton"] * 4
    call()
    assert kernel.log[-1][0] == "direct"  # the shortcut again once nothing observes the launches


def test_interpreted_kernels_always_take_tritons_path():
    from xlstm_ts.kernels.mlstm import triton_chunkwise

    if torch.cuda.is_available():
        pytest.skip("kernels are compiled here, not interpreted")
    assert triton_chunkwise._FWD._constexprs is None and triton_chunkwise._BWD._constexprs is None


def test_every_chunk_parallel_kernel_launches_through_a_fast_launcher(parallel_forward, monkeypatch):
    """The boundary, output, row-dot and gradient kernels of the chunk-parallel path (forward with and without
    gradients, backward), the share-summing kernel and the step kernel launch through `fast`, one launcher each."""
    from xlstm_ts.kernels.mlstm import triton_chunkwise_segments

    monkeypatch.setattr(triton_chunkwise_segments, "SEGMENT_CHUNKS_OVERRIDE", 1)  # segments of one chunk, with grads
    monkeypatch.setattr(_fast_launch, "_LAUNCHERS", {})
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 40, 16).requires_grad_() for _ in range(3))
    i, f = (torch.randn(1, 2, 40).requires_grad_() for _ in range(2))
    fn = get_kernel("mlstm_chunkwise--triton")
    with torch.no_grad():
        fn(q, k, v, i, f, chunk_size=16)
    fn(q, k, v, i, f, chunk_size=16).sum().backward()
    monkeypatch.setattr(triton_chunkwise_segments, "SEGMENT_CHUNKS_OVERRIDE", None)
    wide_v = torch.randn(1, 2, 40, 80).requires_grad_()  # two DHV blocks: their shares summed in one launch
    fn(q, k, wide_v, i, f, chunk_size=16).sum().backward()
    get_kernel("mlstm_step--triton")(q[:, :, 0], k[:, :, 0], v[:, :, 0], i[:, :, 0], f[:, :, 0], None, None, None)
    names = {getattr(kernel, "__name__", None) or kernel.fn.__name__ for kernel in _fast_launch._LAUNCHERS}
    wanted = {"_mlstm_bounds_fwd_kernel_tl", "_mlstm_chunk_out_kernel_tl", "_mlstm_bounds_rows_kernel_tl",
              "_mlstm_bounds_bwd_kernel_tl", "_mlstm_chunk_bwd_kernel_tl", "_mlstm_step_fwd_kernel_tl",
              "_mlstm_chunkwise_bwd_sum_kernel_tl"}  # fmt: skip
    assert wanted <= names, names
    assert all(_fast_launch.fast(kernel) is launcher for kernel, launcher in _fast_launch._LAUNCHERS.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("S, D", [(64, 64), (300, 64), (1100, 128)])  # 1100 x 128: the chunk-parallel kernels
def test_mlstm_bitwise_the_same_with_and_without_the_shortcut(S, D, monkeypatch):
    from xlstm_ts.kernels.mlstm import triton_chunkwise, triton_one_chunk_fwd

    # fresh signature caches, so the check at the end sees this test's launches only
    forwards, backwards = [triton_chunkwise._FWD, triton_one_chunk_fwd._FWD_ONE], [triton_chunkwise._BWD,
                                                                                   triton_chunkwise._BWD_ONE]
    for launcher in [*forwards, *backwards, *_fast_launch._LAUNCHERS.values()]:
        monkeypatch.setattr(launcher, "_compiled", {})
    fn = get_kernel("mlstm_chunkwise--triton")
    torch.manual_seed(0)
    base = torch.randn(3, 2, 4, S, D + 1, device="cuda", dtype=torch.bfloat16)
    gates = torch.randn(2, 2, 4, S, device="cuda")

    def run(offset):
        q, k, v = (base[j, ..., offset : offset + D].requires_grad_() for j in range(3))  # offset 1: misaligned
        i, f = (gates[j].clone().requires_grad_() for j in range(2))
        h = fn(q, k, v, i, f)
        h.float().square().sum().backward()
        return [h, q.grad, k.grad, v.grad, i.grad, f.grad]

    for offset in (0, 1, 0):
        monkeypatch.setattr(_fast_launch, "ENABLED", False)
        slow = run(offset)
        monkeypatch.setattr(_fast_launch, "ENABLED", True)
        run(offset)  # fills the signature cache
        fast = run(offset)
        for a, b in zip(slow, fast, strict=True):
            assert torch.equal(a, b)
    # one chunk (S = 64) runs the one-chunk kernels, 300 steps the chunkwise ones: either took the shortcut; 1100
    # steps of 128-wide heads run the chunk-parallel ones, launched through `fast`
    if S <= 1000:
        assert any(launcher._compiled for launcher in forwards) and any(launcher._compiled for launcher in backwards)
    else:  # the chunk-parallel kernels of a forward and backward with gradients
        compiled = {getattr(kernel, "__name__", None) or kernel.fn.__name__
                    for kernel, launcher in _fast_launch._LAUNCHERS.items() if launcher._compiled}
        wanted = {"_mlstm_bounds_fwd_kernel_tl", "_mlstm_chunk_out_kernel_tl", "_mlstm_bounds_bwd_kernel_tl",
                  "_mlstm_chunk_bwd_kernel_tl"}  # fmt: skip
        assert wanted <= compiled, compiled
