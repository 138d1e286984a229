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


def test_every_package_folder_installs():
    """Each folder with an __init__.py under xlstm_ts/, kernels/ and datasets/ is listed in pyproject's packages
    (a missing one installs from a checkout in editable mode but is left out of a wheel)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {folder: name for name, folder in config["package-dir"].items()}
    found = set()
    for root in roots:
        for init in (ROOT / root).rglob("__init__.py"):
            top, *rest = init.parent.relative_to(ROOT).parts
            found.add(".".join([roots[top], *rest]))
    assert found <= listed, sorted(found - listed)
