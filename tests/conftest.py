"""Shared fixtures: small, fast pipeline profiles in temporary workspaces (never the repo's .mlops)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg import HOW as PG_HOW, pg_bin, postgres_server

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).parent / "mlops-nb")]  # the console script, as a user types it

# A small profile: every stage runs for real, on less data and fewer trials.
SMALL = ["data.demo.rows=1500", "tuning.n_trials=3", "tuning.cv_folds=2", "tuning.families=[linear,hgb]",
         "tuning.timeout_s=120"]


def small_overrides(workspace: Path, *extra: str) -> list[str]:
    return [f"workspace={workspace}", *SMALL, *extra]


def mlops(*args, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
    "Run the real `mlops-nb` command line in a subprocess."
    e = {**os.environ, **(env or {})}
    e.pop("MLOPS_NB_TRACKING_URI", None)
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd or ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


def params(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("-p", o)]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    "One full pipeline run on demo data through the real CLI, shared by the tests that only read its results."
    ws = tmp_path_factory.mktemp("demo_ws")
    r = mlops("run", "--config", ROOT / "pipeline.yaml", *params(small_overrides(ws)), "--json")
    assert r.returncode == 0, r.stderr[-4000:]
    return ws, json.loads(r.stdout), r.stderr


@pytest.fixture(scope="module")
def pg_url():
    "A real PostgreSQL server for the module's tests (see tests/pg.py): skipped, or failed under MLOPS_NB_REQUIRE_POSTGRES=1, without one."
    bin_ = pg_bin()
    if bin_ is None:
        if os.environ.get("MLOPS_NB_REQUIRE_POSTGRES"): pytest.fail(PG_HOW)
        pytest.skip(PG_HOW)
    with postgres_server(bin_) as url: yield url
