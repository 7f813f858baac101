"""Concurrent registry moves from separate processes: every move that reports success is in the alias history, and
the champion alias agrees with the last recorded move (issue: two of three simultaneous moves went missing)."""
import json
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from mlops_nb import registry

MOVE = r"""
import json, sys, time
from mlflow import MlflowClient
from mlops_nb import registry
uri, start, proc, *moves = sys.argv[1:]
client = MlflowClient(uri)
client.get_registered_model("m")  # connect (and import everything) before the start line
while time.time() < float(start): time.sleep(0.001)
for i, move in enumerate(moves):
    who = f"process {proc}, move {i}"
    try:
        if move == "rollback": event = registry.rollback("m", who=who, why="race", client=client)
        else: event = registry.promote("m", move, who=who, why="race", client=client)
        print(json.dumps(event))
    except ValueError as e: print(json.dumps({"error": str(e)}))
"""


def _evaluation(passed=True):
    return {"passed": passed, "metrics": {}, "champion": None,
            "gates": [{"gate": "absolute", "metric": "roc_auc", "value": 0.9, "threshold": 0.7, "passed": passed,
                       "why": "ok"}]}


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    for v in range(1, 5):  # v1 becomes champion on registration; v2..v4 are challengers that passed their gates
        src = tmp_path / f"model{v}"
        src.mkdir()
        registry.register(src.as_uri(), "m", _evaluation(v == 1), client)
        if v > 1: client.set_model_version_tag("m", str(v), "passed", "true")
    return uri, client


# three processes (two promoting back and forth, one rolling back) start their moves at the same instant
PROCESSES = [["2", "3"] * 10, ["4", "3"] * 10, ["4", "2"] * 10, ["rollback"] * 20]


def test_simultaneous_moves_are_all_recorded(store):
    uri, client = store
    start = time.time() + 8  # every process is connected and waiting well before this instant
    procs = [subprocess.Popen([sys.executable, "-c", MOVE, uri, str(start), str(k), *moves], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k, moves in enumerate(PROCESSES)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
        results += [json.loads(line) for line in out.strip().splitlines()]
    moved = [r for r in results if "error" not in r and r.get("action") != "none"]
    assert moved, results
    hist = registry.history("m", client)
    recorded = [(e["action"], e["version"], e["who"]) for e in hist if e["why"] == "race"]
    for r in moved: assert (r["action"], r["version"], r["who"]) in recorded, (r, hist)
    assert len(recorded) == len(moved)
    champion_events = [e for e in hist if e["alias"] == "champion"]
    assert registry.champion_version("m", client) == champion_events[-1]["version"]
    for before, after in zip(champion_events, champion_events[1:]):  # a chain: each move starts where the last ended
        assert after["previous"] == before["version"], hist
