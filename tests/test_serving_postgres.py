"""The prediction log on a real PostgreSQL server that the test starts itself from the system's binaries (Debian's
`postgresql` package), listening on 127.0.0.1 only: the same code as the embedded default, selected by URL."""
import signal
import time

from conftest import mlops
from test_serving import Server, copy_workspace, records, rows  # noqa: F401  (fixture)


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
