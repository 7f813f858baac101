#!/usr/bin/env python
"""Prediction-log read benchmark: a window of N logged predictions (the demo model's 15 input fields, outputs and
metadata: 24 columns) read into a DataFrame with `mlops_nb.predlog.read_log`, as monitoring does. Fills a fresh
SQLite log in a temporary folder (not timed), then times the read. Appends its line to bench/serving.md.

    .venv/bin/python bench/predlog_read.py --rows 1000000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIELDS = {"applied_at": "datetime", **{f"num{i}": "double" for i in range(9)}, **{f"cat{i}": "string" for i in range(5)}}


def fill(url: str, rows: int, chunk: int = 50_000) -> None:
    from mlops_nb.predlog import PredictionLog
    log = PredictionLog(url, FIELDS, [0, 1], max_rows=rows, flush_s=3600)
    rng = np.random.default_rng(0)
    t0 = time.time()
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols = {"request_id": [f"r{start + i:09d}" for i in range(n)], "logged_at": (t0 + np.arange(start, start + n) / 1000).tolist(),
                "model_name": ["credit-risk"] * n, "model_version": ["1"] * n, "role": ["champion"] * n,
                "latency_ms": rng.gamma(2, 3, n).round(3).tolist(), "prediction": rng.choice(["0", "1"], n).tolist(),
                "proba_0": rng.random(n).tolist(), "applied_at": ["2024-05-01T10:00:00"] * n}
        cols["proba_1"] = [1 - p for p in cols["proba_0"]]
        cols |= {f: rng.normal(size=n).round(3).tolist() for f in FIELDS if f.startswith("num")}
        cols |= {f: rng.choice(["a", "b", "c", None], n).tolist() for f in FIELDS if f.startswith("cat")}
        log._insert([(cols, n)])
    log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=HERE / "serving.md")
    args = ap.parse_args()
    from mlops_nb.predlog import read_log
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{d}/predictions.db"
        fill(url, args.rows)
        t = time.perf_counter()
        df = read_log(url)
        secs = time.perf_counter() - t
    line = (f"Reading a {len(df):,}-row window of the prediction log ({df.shape[1]} columns, SQLite) into a DataFrame "
            f"with `read_log`: {secs:.2f} s (`.venv/bin/python bench/predlog_read.py --rows {args.rows}`).")
    print(line)
    if args.out.exists() and "bench/predlog_read.py" not in args.out.read_text():
        args.out.write_text(args.out.read_text().rstrip("\n") + "\n\n## Reading the log\n\n" + line + "\n")


if __name__ == "__main__":
    sys.exit(main())
