#!/usr/bin/env python
"""Serving benchmark: `mlops-nb serve` vs `mlflow models serve --env-manager local`, same model, same requests, one run.

Both servers load `models:/<name>@champion` from one workspace (a demo pipeline run with the gradient-boosting
family, made here unless --workspace is given) and are driven alternately, scenario by scenario, with the same requests to `/invocations`
(MLflow's `dataframe_split`) by a light asyncio client with keep-alive connections on the same machine:
single rows at concurrency 1, 8 and 32, then 100- and 1000-row batches. Each line reports requests/s, rows/s, p50,
p99 and errors; the prediction log of `mlops-nb serve` is on (its default). Also measured per server: cold start
(process start to the first answered request) and idle memory (RSS of the server's process tree after the load,
idle), and the champion's latency at concurrency 32 with shadow scoring on. Ratios are computed inside the same run.
Writes bench/serving.md.

    .venv/bin/python bench/serving.py                          # about 3 minutes
    .venv/bin/python bench/serving.py --seconds 10 --workspace .mlops --out bench/serving.md
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
SCENARIOS = [("1 row, concurrency 1", 1, 1), ("1 row, concurrency 8", 1, 8), ("1 row, concurrency 32", 1, 32),
             ("100 rows, concurrency 1", 100, 1), ("1000 rows, concurrency 1", 1000, 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_workspace(ws: Path) -> None:
    "A demo pipeline run whose champion is a ColumnTransformer + HistGradientBoosting pipeline."
    cmd = [str(BIN / "mlops-nb"), "run", "--config", str(ROOT / "pipeline.yaml"), "--workspace", str(ws),
           "-p", "tuning.families=[hgb]", "-p", "tuning.n_trials=4", "-p", "tuning.cv_folds=2"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ws.parent)


def bodies(ws: Path, rows: int, n: int = 64) -> list[bytes]:
    "`n` different `dataframe_split` bodies of `rows` rows each, from the run's snapshot, typed as the signature says."
    from mlflow.models import Model
    df = pd.read_parquet(next((ws / "snapshots").glob("*.parquet")))
    spec = Model.load(str(next((ws / "artifacts").rglob("MLmodel")))).signature.inputs.inputs
    X = df[[c.name for c in spec]].copy()
    for c in spec:
        if "double" in str(c.type): X[c.name] = X[c.name].astype(float)
        if "datetime" in str(c.type): X[c.name] = X[c.name].dt.strftime("%Y-%m-%dT%H:%M:%S")
    X = X.astype(object).where(X.notna(), None)
    out = []
    for i in range(n):
        part = X.sample(rows, replace=rows > len(X), random_state=i)
        out.append(json.dumps({"dataframe_split": {"columns": list(X.columns), "data": part.values.tolist()}}).encode())
    return out


async def _request(reader, writer, port: int, body: bytes) -> int:
    writer.write(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (port, len(body)) + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length": length = int(v)
    await reader.readexactly(length)
    return status


async def _client(port: int, reqs: list[bytes], deadline: float, lat: list, errors: list, offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        try: status = await asyncio.wait_for(_request(reader, writer, port, reqs[i % len(reqs)]), 60)
        except (asyncio.TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
            errors.append(repr(e)); writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port); continue
        lat.append(time.perf_counter() - t)
        if status != 200: errors.append(status)
        i += 1
    writer.close()


def drive(port: int, reqs: list[bytes], concurrency: int, seconds: float) -> dict:
    "Run `concurrency` keep-alive clients for `seconds` (after a 1 s warm-up); return the latency summary."
    async def main():
        await asyncio.gather(*[_client(port, reqs, time.perf_counter() + 1, [], [], k) for k in range(concurrency)])
        lat, errors = [], []
        t0 = time.perf_counter()
        await asyncio.gather(*[_client(port, reqs, t0 + seconds, lat, errors, k * 7) for k in range(concurrency)])
        return lat, errors, time.perf_counter() - t0
    lat, errors, wall = asyncio.run(main())
    a = np.array(lat) * 1000
    return {"requests": len(a), "rps": len(a) / wall, "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
            "p99_ms": float(np.percentile(a, 99)) if len(a) else None, "errors": len(errors)}


def rss_mb(pid: int) -> float:
    "Resident memory of a process and its descendants, MB."
    import psutil
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


def start(kind: str, ws: Path, body: bytes, extra_env: dict, *params: str) -> tuple[subprocess.Popen, int, float]:
    "Start a server; return it, its port and the cold start (spawn to first answered request), seconds."
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **extra_env}
    env.pop("MLOPS_NB_TRACKING_URI", None)
    if kind == "mlops-nb":
        cmd = [str(BIN / "mlops-nb"), "serve", "--workspace", str(ws), "--port", str(port), *params]
    else:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws / 'mlflow.db'}"
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/credit-risk@champion", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]
    t0 = time.perf_counter()
    log = open(ws / f"{kind}-{port}.log", "wb")  # a file, not a pipe: a full pipe would stall a server that logs each request
    proc = subprocess.Popen(cmd, env=env, cwd=ws, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    while True:
        if proc.poll() is not None: raise RuntimeError(f"{kind} exited: {(ws / log.name).read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body)
                if b" 200 " in s.recv(64): return proc, port, time.perf_counter() - t0
        except OSError: pass
        if time.perf_counter() - t0 > 180: raise RuntimeError(f"{kind} did not answer in 180 s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    import signal
    os.killpg(proc.pid, signal.SIGTERM)
    try: proc.wait(60)
    except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()


def bench(ws: Path, reqs: dict, seconds: float) -> dict:
    "Start both servers (one after the other, for their cold starts), then drive them in turn, scenario by scenario."
    out, procs = {}, {}
    try:
        for kind in ("mlops-nb", "mlflow"):
            if kind == "mlops-nb": shutil.rmtree(ws / "serving" / "models", ignore_errors=True)  # the first start fetches
            proc, port, cold = start(kind, ws, reqs[1][0], {})
            procs[kind] = (proc, port)
            time.sleep(2)
            out[kind] = {"cold_start_s": cold, "idle_mb": rss_mb(proc.pid), "runs": {}}
        again, _, out["mlops-nb"]["cold_start_cached_s"] = start("mlops-nb", ws, reqs[1][0], {})  # version in the cache
        stop(again)
        for label, rows, conc in SCENARIOS:  # alternating keeps both under the same background load
            for kind, (proc, port) in procs.items():
                r = drive(port, reqs[rows], conc, seconds)
                out[kind]["runs"][label] = {**r, "rows_per_s": r["rps"] * rows}
                print(f"{kind:9s} {label:26s} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                      f"errors {r['errors']}", file=sys.stderr, flush=True)
        time.sleep(2)
        for kind, (proc, _) in procs.items(): out[kind]["idle_mb_after_load"] = rss_mb(proc.pid)
    finally:
        for proc, _ in procs.values(): stop(proc)
    out["shadow"] = shadow_cost(ws, reqs, seconds)  # after both servers above stopped
    return out


SHADOW_ROUNDS = 3  # off/on alternated: a p99 moves with the machine's background load, medians of rounds are steadier
ADMIN_TOKEN = "bench-admin-token"  # lets the benchmark switch shadow scoring on one running server (`/admin/routing`)

def set_shadow(port: int, on: bool) -> None:
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/routing", json.dumps({"shadow": on}).encode(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert json.loads(urllib.request.urlopen(req, timeout=60).read())["shadow"] is on


def shadow_counts(port: int) -> dict:
    "From `/metrics`: rows handed to the shadow process, and rows it skipped because it was behind."
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    val = lambda pred: sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if not l.startswith("#") and pred(l))
    return {"queued": val(lambda l: l.startswith("mlops_predictions_total{") and 'role="shadow"' in l),
            "skipped": val(lambda l: l.startswith("mlops_shadow_dropped_rows "))}


def shadow_cost(ws: Path, reqs: dict, seconds: float) -> dict:
    "Champion latency at concurrency 32 with shadow scoring (the challenger alias) off vs on, switched on one server."
    proc, port, _ = start("mlops-nb", ws, reqs[1][0], {"MLOPS_NB_ADMIN_TOKEN": ADMIN_TOKEN})
    rounds = {"off": [], "on": []}
    try:
        set_shadow(port, True); drive(port, reqs[1], 32, 2)  # the shadow process started and warm before measuring
        for _ in range(SHADOW_ROUNDS):
            for on in (False, True):
                set_shadow(port, on); rounds["on" if on else "off"].append(drive(port, reqs[1], 32, seconds))
        shadow_rows = shadow_counts(port)
    finally: stop(proc)
    med = lambda rs, k: float(np.median([r[k] for r in rs]))
    out = {k: {m: med(rs, m) for m in ("rps", "p50_ms", "p99_ms", "errors")} | {"rounds": rs} for k, rs in rounds.items()}
    out["shadow_rows"] = shadow_rows
    print(f"shadow off/on at concurrency 32 (median of {SHADOW_ROUNDS}): p99 {out['off']['p99_ms']:.1f} / "
          f"{out['on']['p99_ms']:.1f} ms", file=sys.stderr)
    return out


def table(res: dict) -> str:
    a, b = res["mlops-nb"], res["mlflow"]
    lines = ["| scenario | server | requests/s | rows/s | p50 ms | p99 ms | errors | throughput vs MLflow |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, *_ in SCENARIOS:
        for name, r in (("mlops-nb serve", a["runs"][label]), ("mlflow models serve", b["runs"][label])):
            ratio = f"{r['rps'] / b['runs'][label]['rps']:.1f}x" if name.startswith("mlops") else ""
            lines.append(f"| {label} | {name} | {r['rps']:.0f} | {r['rows_per_s']:.0f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['errors']} | {ratio} |")
    lines += ["", "| | mlops-nb serve | mlflow models serve |", "|---|---:|---:|",
              f"| cold start (spawn to first answer), first start: the version installed from the registry | {a['cold_start_s']:.1f} s | {b['cold_start_s']:.1f} s |",
              f"| cold start, the version already in the workspace's model cache | {a['cold_start_cached_s']:.1f} s | |",
              f"| idle memory (RSS, process tree), after start | {a['idle_mb']:.0f} MB | {b['idle_mb']:.0f} MB |",
              f"| idle memory after the load | {a['idle_mb_after_load']:.0f} MB | {b['idle_mb_after_load']:.0f} MB |"]
    sh = res["shadow"]
    lines += ["", f"| `mlops-nb serve`, 1 row, concurrency 32, one server, shadow switched by `/admin/routing` (median of {SHADOW_ROUNDS} alternated rounds) | requests/s | p50 ms | "
              "p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    lines += [f"| shadow {k} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} |" for k, r in
              (("off", sh["off"]), ("on (the challenger scores the champion's rows, logged)", sh["on"]))]
    lines += ["", f"Shadow on vs off: champion p99 {sh['on']['p99_ms'] / sh['off']['p99_ms'] - 1:+.0%}, "
              f"requests/s {sh['on']['rps'] / sh['off']['rps'] - 1:+.0%}. The shadow process was handed "
              f"{sh['shadow_rows']['queued']:.0f} rows; rows it skipped while behind: {sh['shadow_rows']['skipped']:.0f}."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="a workspace with a champion (default: a fresh demo run)")
    ap.add_argument("--seconds", type=float, default=8, help="measured seconds per scenario")
    ap.add_argument("--out", type=Path, default=HERE / "serving.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = args.workspace.resolve() if args.workspace else Path(tmp) / "ws"
        if not args.workspace: make_workspace(ws)
        reqs = {n: bodies(ws, n) for n in sorted({r for _, r, _ in SCENARIOS})}
        res = bench(ws, reqs, args.seconds)
    load = os.getloadavg()
    md = [f"# Serving benchmark", "",
          f"`{' '.join(['.venv/bin/python', 'bench/serving.py', *sys.argv[1:]])}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
          f"load average at the end {load[0]:.1f}. Client and servers share the machine. Both servers score "
          f"the same registered ColumnTransformer + HistGradientBoosting pipeline through `/invocations` "
          f"(`dataframe_split`); {args.seconds:g} s per line after 1 s of warm-up; `mlops-nb serve` writes its "
          f"prediction log (SQLite in the workspace) throughout.", "", table(res), "",
          "```json", json.dumps(res, indent=1), "```", ""]
    args.out.write_text("\n".join(md))
    print(table(res))


if __name__ == "__main__":
    main()
