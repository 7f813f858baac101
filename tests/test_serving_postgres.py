"""The prediction log on a real PostgreSQL server that the test starts itself from the system's binaries (Debian's
`postgresql` package), listening on 127.0.0.1 only: the same code as the embedded default, selected by URL."""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import mlops
from test_serving import Server, copy_workspace, records, rows  # noqa: F401  (fixture)

HOW = ("PostgreSQL binaries not found: install Debian's `postgresql` package (apt-get install -y postgresql; "
       ".ci/run does it) to run the PostgreSQL prediction-log tests")


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    "initdb and the server refuse to run as root: run them as the `postgres` user then."
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url():
    bin_ = pg_bin()
    if bin_ is None:
        if os.environ.get("MLOPS_NB_REQUIRE_POSTGRES"): pytest.fail(HOW)
        pytest.skip(HOW)
    d = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    d.chmod(0o755)
    data = d / "data"
    data.mkdir()
    if os.geteuid() == 0: shutil.chown(data, "postgres", "postgres")
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    subprocess.run(_as_postgres([str(bin_ / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, text=True)
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"  # socket and log where postgres may write
    subprocess.run(_as_postgres([str(bin_ / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(data / "server.log"), "-w",
                                 "start"]), check=True, capture_output=True, text=True, timeout=60)
    try: yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bin_ / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_log_library_on_postgres(pg_url):
    from mlops_nb.predlog import PredictionLog, read_log
    log = PredictionLog(pg_url, {"age": "double", "region": "string", "ssn": "string"}, [0, 1], {"ssn": "hash"}, key=b"k")
    log.write({"request_id": ["p1", "p2"], "logged_at": [time.time()] * 2, "role": ["champion"] * 2,
               "prediction": ["0", "1"], "proba_1": [0.1, 0.9], "age": [30.0, None], "region": ["north", None],
               "ssn": ["123", "456"]}, 2)
    assert log.add_feedback({"p1": 1, "nope": 0}) == ["nope"]
    log.close()
    df = read_log(pg_url).set_index("request_id")
    assert df.loc["p1", "label"] == "1" and df.loc["p2", "proba_1"] == 0.9 and df.loc["p1", "ssn"] != "123"
    assert log.written == 2 and log.dropped == 0


def test_service_logs_to_postgres_and_flushes_on_sigterm(demo_run, rows, pg_url, tmp_path):  # noqa: F811
    ws = copy_workspace(demo_run[0], tmp_path / "ws")
    s = Server(ws, f"serving.log_url={pg_url}")
    ids = [f"pg{i}" for i in range(20)]
    status, out = s.call("POST", "/predict", {"records": records(rows.head(20)), "ids": ids})
    assert status == 200
    status, out = s.call("POST", "/feedback", {"feedback": [{"request_id": "pg3", "label": 1}]})
    assert status == 200 and out == {"accepted": 1, "unknown": []}
    status, _ = s.call("POST", "/invocations", {"dataframe_records": records(rows.head(5))})
    assert status == 200
    assert s.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    r = mlops("predictions", "--workspace", ws, "-p", f"serving.log_url={pg_url}", "--output", tmp_path / "log.parquet")
    assert r.returncode == 0, r.stderr
    import pandas as pd
    df = pd.read_parquet(tmp_path / "log.parquet")
    assert set(ids) <= set(df.request_id) and len(df) >= 25
    assert df.set_index("request_id").loc["pg3", "label"] == "1"
    assert not (ws / "predictions.db").exists()  # nothing went to the embedded default
