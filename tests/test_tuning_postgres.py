"""Optuna studies in a real PostgreSQL server (extra `[postgres]`): a study resumes, and two worker processes share one.

The server is a throwaway one from the `pgserver` package (PostgreSQL binaries in a wheel), started once per test
run in a temporary folder, listening on a Unix socket only, and removed at the end.
"""

import importlib.util
import os
import subprocess
import sys
import warnings

import pytest

from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_integration")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None or importlib.util.find_spec("psycopg2") is None,
    reason="needs a PostgreSQL server and driver: pip install -e '.[postgres]' (pgserver, psycopg2-binary)")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    with warnings.catch_warnings():  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver
    data = tmp_path_factory.mktemp("postgres") / "data"
    try:
        server = pgserver.get_server(data, cleanup_mode="delete")
    except (subprocess.SubprocessError, OSError) as err:
        log = data / "log"
        pytest.fail(f"pgserver could not start PostgreSQL in {data}: {err}\n"
                    f"server log:\n{log.read_text() if log.is_file() else '(none)'}")
    # a throwaway server: skip the flushes that make commits durable (Optuna commits often; shutdown is faster too)
    server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
                "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database for each test, as an SQLAlchemy URL with the psycopg2 driver."""
    name = request.node.name.lower()
    postgres_server.psql(f'CREATE DATABASE "{name}";')
    return postgres_server.get_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="module")
def panel():
    return make_synthetic_panel(n_series=2, length=200, seed=0)


def small_space(trial):
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "model": {"embed_dim": 16, "num_heads": 2, "pattern": "m", "patch_length": 8}}


def test_postgres_study_resumes(panel, postgres_url):
    common = {"search_space": small_space, "storage": postgres_url, "study_name": "resume", "max_steps": 5,
              "val_check_steps": 5, "pruner": "none", "random_state": 0, "refit": False}
    first = tune(panel, 12, n_trials=1, **common)
    assert [t.state.name for t in first.study.trials] == ["COMPLETE"]
    value = first.study.trials[0].value
    again = tune(panel, 12, n_trials=2, **common)
    assert [t.number for t in again.study.trials] == [0, 1]
    assert again.study.trials[0].value == value  # the first call's trial is kept, not rerun
    assert again.study.trials[1].state.name == "COMPLETE"
    loaded = optuna.load_study(study_name="resume", storage=postgres_url)
    assert len(loaded.trials) == 2 and loaded.best_value == again.study.best_value


WORKER = """
import os, sys, time
from pathlib import Path
from xlstm_ts import tune
from xlstm_ts.datasets import make_synthetic_panel

url, ready = sys.argv[1], Path(sys.argv[2])
(ready / str(os.getpid())).touch()
deadline = time.time() + 120
while len(list(ready.iterdir())) < 2 and time.time() < deadline:  # start both workers' searches together
    time.sleep(0.05)

def space(trial):
    trial.set_user_attr("worker", os.getpid())
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "model": {"embed_dim": 16, "num_heads": 2, "pattern": "m", "patch_length": 8}}

tune(make_synthetic_panel(n_series=2, length=200, seed=0), 12, n_trials=4, search_space=space, storage=url,
     study_name="shared", max_steps=5, val_check_steps=5, pruner="none", refit=False)
"""


def test_two_workers_share_a_postgres_study(postgres_url, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers on a small machine: one thread each
    procs = [subprocess.Popen([sys.executable, str(script), postgres_url, str(ready)], stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-2000:] for e in errors)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # no duplicated or skipped trial number
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 4 <= len(complete) <= 5 and len(complete) == len(study.trials)  # none lost; at most one racing extra
    workers = {t.user_attrs["worker"] for t in complete}
    assert workers == {p.pid for p in procs}, f"trials ran in {workers}, workers were {[p.pid for p in procs]}"
