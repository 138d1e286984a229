"""Repository rules: thin files in the package, lint clean."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_files_stay_thin():
    long = {p.name: n for p in (ROOT / "xlstm_ts").glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"files over 300 lines in xlstm_ts/: {long}; split them by concern"


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = subprocess.run([ruff, "check", "xlstm_ts", "kernels", "datasets", "tests", "benchmarks", "examples"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
