"""How fast is `mlops_nb.drift`, and does it decide as Evidently's data-drift preset does, on the same data?

Makes a reference and a current table of ROWS x 20 columns (10 numeric of several shapes, 10 categorical; some
drifted strongly, some a little, some not at all; a few nulls), then in one run:

1. times `build_reference` (training time) and `compare` (the monitoring cost; the target is < 3 s at 1,000,000
   rows x 20 columns), first call and the median of three;
2. writes both tables to Parquet and runs Evidently's `DataDriftPreset` on them in a subprocess of its own virtual
   environment (Evidently's current release does not import under pandas 3, and does not say so: its environment
   pins `pandas<3`), created with `python3 -m venv` and `pip install evidently "pandas<3" pyarrow` when missing;
3. compares the per-column decisions and statistics (Evidently's defaults on large data are the same tests as ours:
   Wasserstein distance / reference std for numeric columns, Jensen-Shannon distance for categorical ones, both at 0.1).

Writes bench/drift.md.

    PYTHONPATH=. .venv/bin/python bench/drift.py [--rows 1000000 100000] [--evidently-venv /tmp/evidently-venv]
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_nb.config import PipelineConfig
from mlops_nb.drift import build_reference, compare
from mlops_nb.schema import infer_schema

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = Path("/tmp/evidently-venv")

# Run inside Evidently's own environment: reads the two Parquet files, runs the preset with the column types given
# (as ours are: from the schema), prints seconds and per-column {drifted, score, method} as JSON.
EVIDENTLY_SCRIPT = r"""
import json, sys, time
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
num, cat = json.loads(sys.argv[3]), json.loads(sys.argv[4])
t = time.perf_counter()
dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
seconds = time.perf_counter() - t
out = {}
for m in snap.dict()["metrics"]:
    cfg = m.get("config", {})
    if cfg.get("type", "").endswith("ValueDrift"):
        thr = cfg.get("threshold")
        out[cfg["column"]] = {"score": m["value"], "method": cfg.get("method"), "threshold": thr}
import evidently
print(json.dumps({"seconds": seconds, "columns": out, "version": evidently.__version__}))
"""


def make_table(n: int, seed: int, drifted: bool) -> pd.DataFrame:
    "ROWS x 20: numeric columns of several shapes, categorical ones of several sizes; the drift is in named columns."
    rng = np.random.default_rng(seed)
    k = 1.0 if drifted else 0.0
    d = {
        "n_normal_shift": rng.normal(50 + 5 * k, 10, n),  # +0.5 sd: drifts
        "n_normal_wider": rng.normal(0, 1 + 0.5 * k, n),  # sd x1.5: drifts
        "n_lognormal_shift": rng.lognormal(10 + 0.3 * k, 0.5, n),  # x1.35: drifts
        "n_normal_small": rng.normal(0.05 * k, 1, n),  # +0.05 sd: does not (real, but small)
        "n_normal_edge": rng.normal(0.15 * k, 1, n),  # +0.15 sd: near the threshold
        "n_uniform": rng.uniform(0, 100, n),
        "n_exponential": rng.exponential(3, n),
        "n_counts": rng.poisson(2, n).astype(float),  # discrete
        "n_integers": rng.integers(18, 80, n).astype(float),
        "n_gamma": rng.gamma(2, 2, n),
    }
    d["n_exponential"][rng.random(n) < 0.03] = np.nan  # some nulls
    cats = lambda m: np.array([f"v{i:02d}" for i in range(m)], dtype=object)
    p5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    d |= {
        "c_shift": cats(5)[rng.choice(5, n, p=p5[::-1] if drifted else p5)],  # shares reversed: drifts
        "c_new": np.where(rng.random(n) < 0.15 * k, "new", cats(4)[rng.integers(0, 4, n)]).astype(object),  # 15% unseen: drifts
        "c_small": cats(3)[rng.choice(3, n, p=[0.52, 0.3, 0.18] if drifted else [0.5, 0.3, 0.2])],  # does not
        "c_binary": cats(2)[rng.choice(2, n, p=[0.7, 0.3])],
        "c_many": cats(50)[rng.integers(0, 50, n)],
        "c_skewed": cats(8)[np.minimum(rng.geometric(0.4, n) - 1, 7)],
        "c_three": cats(3)[rng.integers(0, 3, n)],
        "c_four": cats(4)[rng.integers(0, 4, n)],
        "c_six": cats(6)[rng.integers(0, 6, n)],
        "c_ten": cats(10)[rng.integers(0, 10, n)],
    }
    df = pd.DataFrame(d)
    df.loc[rng.random(n) < 0.02, "c_skewed"] = None
    return df


def ensure_venv(venv: Path) -> Path:
    "The Python of Evidently's virtual environment, created (venv + pip install evidently) when missing."
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with evidently (pip) ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "evidently", "pandas<3", "pyarrow"], check=True)
    return py


def time_ours(ref: pd.DataFrame, cur: pd.DataFrame) -> dict:
    schema = infer_schema(ref.head(20_000), PipelineConfig(), with_target=False)
    t = time.perf_counter()
    reference = build_reference(ref, schema)
    build_s = time.perf_counter() - t
    times = []
    for _ in range(3):
        t = time.perf_counter()
        report = compare(reference, cur)
        times.append(time.perf_counter() - t)
    kinds = {c.name: c.kind for c in reference.columns}
    with tempfile.TemporaryDirectory() as d:
        size = reference.save(Path(d) / "reference.json").stat().st_size
    return {"build_s": build_s, "compare_first_s": times[0], "compare_median_s": statistics.median(times),
            "report": report, "kinds": kinds, "reference_bytes": size}


def run_evidently(py: Path, ref: pd.DataFrame, cur: pd.DataFrame, kinds: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        ref.to_parquet(f"{d}/ref.parquet"); cur.to_parquet(f"{d}/cur.parquet")
        num = json.dumps([c for c, k in kinds.items() if k == "numeric"])
        cat = json.dumps([c for c, k in kinds.items() if k == "categorical"])
        t = time.perf_counter()
        r = subprocess.run([str(py), "-c", EVIDENTLY_SCRIPT, f"{d}/ref.parquet", f"{d}/cur.parquet", num, cat],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
    if r.returncode: raise RuntimeError(f"Evidently failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def agreement(report, ev: dict) -> tuple[pd.DataFrame, int]:
    rows = []
    for c in report.columns:
        e = ev["columns"].get(c.name, {})
        e_drift = None if not e else bool(e["score"] >= e["threshold"]) if e.get("method", "").lower().find("p_value") < 0 else bool(e["score"] < e["threshold"])
        rows.append({"column": c.name, "kind": c.kind, "test (ours)": c.test, "ours": round(c.statistic, 4),
                     "Evidently": None if not e else round(e["score"], 4), "Evidently method": e.get("method"),
                     "drifted (ours)": c.drifted, "drifted (Evidently)": e_drift})
    df = pd.DataFrame(rows)
    return df, int((df["drifted (ours)"] == df["drifted (Evidently)"]).sum())


def markdown(results: list[dict], cmd: str) -> str:
    lines = ["# Drift statistics: mlops-nb vs. Evidently's data-drift preset", "",
             f"`{cmd}` on {platform.machine()} (Python {platform.python_version()}, 2 cores shared with other work), "
             f"{date.today().isoformat()}; one run. Both compare the same current table with the same reference table, "
             "20 columns (10 numeric of several shapes, 10 categorical), a few drifted on purpose (see `make_table`). "
             "mlops-nb's `compare` uses the `Reference` prepared by `build_reference` (the training-time step, timed "
             "separately); Evidently takes the two tables and does everything in one call. Evidently ran in its own "
             "virtual environment (its current release does not import under pandas 3); its time is measured inside "
             "that process, without the Parquet read and the imports.", "",
             "| rows | build_reference s | compare s (first call, with scipy.stats imports) | compare s (median of 3) | Evidently s | Evidently / compare | decisions agreeing | reference JSON |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['build_s']:.2f} | {r['compare_first_s']:.2f} | {r['compare_median_s']:.2f} | "
                     f"{r['ev']['seconds']:.1f} | {r['ev']['seconds'] / r['compare_median_s']:.0f}x | "
                     f"{r['agree']} of {len(r['table'])} | {r['reference_bytes'] / 1e6:.1f} MB |")
    lines += ["", f"Evidently {results[0]['ev']['version']}.", ""]
    for r in results:
        lines += [f"## Per column at {r['rows']:,} rows", "",
                  "`ours` is the deciding statistic (Wasserstein / reference std, or Jensen-Shannon distance); "
                  "Evidently's score is its own computation of the same statistic on the full reference (ours uses the "
                  "reference's 10,000 stored quantiles). Largest difference between the two statistics: "
                  f"{r['max_diff']:.4f}.", "", r["table"].to_markdown(index=False), ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 100_000])
    ap.add_argument("--evidently-venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--out", type=Path, default=HERE / "drift.md")
    a = ap.parse_args()
    py = ensure_venv(a.evidently_venv)
    results = []
    for n in a.rows:
        ref, cur = make_table(n, 1, False), make_table(n, 2, True)
        ours = time_ours(ref, cur)
        print(f"{n:,} rows: build {ours['build_s']:.2f}s, compare {ours['compare_first_s']:.2f}s / "
              f"{ours['compare_median_s']:.2f}s", file=sys.stderr)
        ev = run_evidently(py, ref, cur, ours["kinds"])
        print(f"{n:,} rows: Evidently {ev['seconds']:.1f}s (wall {ev['wall_s']:.1f}s)", file=sys.stderr)
        table, agree = agreement(ours["report"], ev)
        diff = (table["ours"] - table["Evidently"]).abs().max()
        results.append({"rows": n, **ours, "ev": ev, "table": table, "agree": agree, "max_diff": float(diff)})
    cmd = "PYTHONPATH=. .venv/bin/python bench/drift.py " + " ".join(sys.argv[1:])
    a.out.write_text(markdown(results, cmd.strip()) + "\n")
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
