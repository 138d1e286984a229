"""The commit a benchmark row records: git's HEAD, or the commit named by $XLSTM_TS_COMMIT for a copied tree."""

import subprocess
from pathlib import Path


def test_commit_id_is_head_or_the_named_commit(load_benchmark, monkeypatch):
    provenance = load_benchmark("provenance")
    monkeypatch.delenv("XLSTM_TS_COMMIT", raising=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip() or "unknown"  # fmt: skip
    assert provenance.commit_id() == head
    monkeypatch.setenv("XLSTM_TS_COMMIT", "abc1234")
    assert provenance.commit_id() == "abc1234"
