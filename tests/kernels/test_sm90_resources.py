"""Every Triton kernel launch of the mLSTM, sLSTM and causal-conv ops, compiled for sm_90 (H100/H200) without a GPU,
fits the device's shared memory: a kernel that does not fits fails only when launched on the GPU, which the
interpreter tests cannot see (an fp32 one-chunk backward once needed 232456 bytes, 8 more than the H200 has)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from xlstm_ts.kernels import _testing_sm90  # noqa: E402


def _ptxas_runs() -> bool:
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    try:
        return subprocess.run([ptxas, "--version"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def launches():
    if not _ptxas_runs():
        pytest.skip("the triton wheel's ptxas does not run here")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "xlstm_ts.kernels._testing_sm90"], capture_output=True, text=True,
                          env=env, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_every_launch_fits_sm90_shared_memory(launches):
    assert {row["case"] for row in launches} == set(_testing_sm90.CASES)  # every case compiled at least one launch
    kernels = {row["kernel"] for row in launches}
    assert {"_mlstm_chunkwise_fwd_kernel_tl", "_mlstm_chunkwise_bwd_kernel_tl", "_mlstm_bounds_fwd_kernel_tl",
            "_mlstm_chunk_out_kernel_tl", "_mlstm_chunk_bwd_kernel_tl",
            "_slstm_fwd_kernel_tl", "_slstm_bwd_kernel_tl",
            "_causal_conv_fwd_kernel_tl", "_causal_conv_grad_kernel_tl",
            "_causal_conv_dx_kernel_tl", "_group_dw_kernel_tl"} <= kernels  # fmt: skip
    too_big = [row for row in launches if row["smem"] > _testing_sm90.SM90_SMEM_BYTES]
    assert not too_big, too_big


def test_conv_kernels_do_not_spill(launches):
    """The causal-conv kernels (alone and with the fused q, k, v maps) are memory-bound: their tiles are sized to stay
    in registers (a backward of 32 x 128 tiles spilled 7.7 KB per thread). Registers and spills from cuobjdump."""
    conv = [row for row in launches if row["kernel"].startswith(("_causal_conv", "_group_dw"))]
    if any(row["stack"] is None for row in conv):
        pytest.skip("the triton wheel's cuobjdump does not run here")
    assert conv and all(row["stack"] == 0 for row in conv), conv


def _run_on_kernel(tmp_path, kernel_source: str, body: str):
    """Run `body` in a fresh interpreter (no TRITON_INTERPRET: Triton compiles) with the @triton.jit function of
    `kernel_source` importable from the module `probe_kernel`; returns the JSON of its last output line."""
    header = "import triton\nimport triton.language as tl\n\n\n@triton.jit\n"
    (tmp_path / "probe_kernel.py").write_text(header + kernel_source)
    script = f"import sys, json, torch\nsys.path.insert(0, {str(tmp_path)!r})\n" + body
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_kernel_over_the_limit_is_reported(tmp_path):
    """The check can fail: a bf16 dot of two 256 x 256 tiles keeps both operands in shared memory (256 KB), more than
    the limit, and compile_sm90 reports it (Triton itself only refuses such a kernel at launch on the device)."""
    if not _ptxas_runs():
        pytest.skip("the triton wheel's ptxas does not run here")
    row = _run_on_kernel(
        tmp_path,
        "def big(a_ptr, b_ptr, o_ptr, N: tl.constexpr):\n"
        "    r = tl.arange(0, N)\n"
        "    a = tl.load(a_ptr + r[:, None] * N + r[None, :])\n"
        "    b = tl.load(b_ptr + r[:, None] * N + r[None, :])\n"
        "    tl.store(o_ptr + r[:, None] * N + r[None, :], tl.dot(a, b))\n",
        "from probe_kernel import big\n"
        "from xlstm_ts.kernels._testing_sm90 import compile_sm90\n"
        "a, out = torch.zeros(256, 256, dtype=torch.bfloat16), torch.zeros(256, 256)\n"
        "print(json.dumps(compile_sm90(big, (a, a, out), {'N': 256, 'num_warps': 4})))\n",
    )
    assert row["smem"] > _testing_sm90.SM90_SMEM_BYTES, row


def test_launch_signature_specializes_as_a_device_launch(tmp_path):
    """Offline compiles see what a launch on the device compiles: integers equal to 1 as constants, integers divisible
    by 16 and aligned tensors with the divisibility hint (register and spill counts depend on it)."""
    sig, const, aligned = _run_on_kernel(
        tmp_path,
        "def small(x_ptr, stride_one, stride_32, n_odd, flag, BLOCK: tl.constexpr):\n"
        "    r = tl.arange(0, BLOCK)\n"
        "    tl.store(x_ptr + r * stride_one + stride_32 + n_odd, r, mask=flag)\n",
        "from probe_kernel import small\n"
        "from xlstm_ts.kernels._testing_sm90 import launch_signature\n"
        "sig, const, attrs = launch_signature(small, (torch.zeros(64), 1, 32, 7, True), {'BLOCK': 16})\n"
        "print(json.dumps([sig, {str(k[0]): v for k, v in const.items()}, sorted(k[0] for k in attrs)]))\n",
    )
    assert sig == {"x_ptr": "*fp32", "stride_one": "constexpr", "stride_32": "i32", "n_odd": "i32", "flag": "i1",
                   "BLOCK": "constexpr"}  # fmt: skip
    assert const == {"1": 1, "5": 16}
    assert aligned == [0, 2]  # the tensor (torch allocations are aligned) and the multiple of 16
