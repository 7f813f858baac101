"""How good is the champion `mlops-nb run --data T --target C` makes on tables it has never seen?

For three generated tables (binary with string labels and a 6% minority, multiclass with string labels,
regression), run the real command line with its defaults, then fit by hand what a careful person would on the
SAME train / validation / test split the run made: a HistGradientBoosting model on ordinal-encoded categoricals,
a small grid chosen on the validation split, refit on train + validation. Both are scored on the same test rows
with the same metric. Writes bench/byod_vs_sklearn.md.

    .venv/bin/python bench/byod_vs_sklearn.py [--rows 4000]
"""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

HERE = Path(__file__).resolve().parent
CLI = str(Path(sys.executable).parent / "mlops-nb")


def make_tables(n: int, seed: int = 0) -> dict[str, tuple[pd.DataFrame, str, str]]:
    "name -> (table, target, metric); nonlinear relations, gaps, text categories, an id and a date column."
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=n), rng.normal(size=n), rng.uniform(-2, 2, n)
    cat = rng.choice(["red", "green", "blue", "grey"], n, p=[0.4, 0.3, 0.2, 0.1])
    base = pd.DataFrame({"ref": [f"R{i:06d}" for i in range(n)],
                         "day": pd.date_range("2024-01-01", periods=n, freq="2h").strftime("%Y-%m-%d %H:%M"),
                         "x1": x1.round(3), "x2": x2.round(3), "x3": x3.round(3), "colour": cat,
                         "noise": rng.normal(size=n).round(3)})
    base.loc[rng.choice(n, n // 20, replace=False), "x2"] = np.nan
    signal = 1.5 * np.sin(2 * x1) + x2 ** 2 * np.where(np.isnan(base["x2"]), 0, 1) + 0.8 * x3 * (cat == "red")
    z = signal - np.quantile(signal, 0.94) + rng.logistic(size=n) * 0.4
    binary = base.assign(outcome=np.where(z > 0, "fraud", "ok"))
    k = np.digitize(signal + rng.normal(0, 0.5, n), np.quantile(signal, [0.33, 0.66]))
    multi = base.assign(segment=np.array(["low", "mid", "high"])[k])
    reg = base.assign(amount=(10 + 3 * signal + rng.normal(0, 1, n)).round(3))
    return {"binary_imbalanced": (binary, "outcome", "roc_auc"), "multiclass": (multi, "segment", "log_loss"),
            "regression": (reg, "amount", "rmse")}


def by_hand(run_dir: Path, target: str, task: str, metric: str, schema: dict) -> tuple[float, dict]:
    "A careful person's model on the run's own split: HGB + ordinal categoricals, grid on validation, refit."
    tr, va, te = (pd.read_parquet(run_dir / "prepare" / f"{s}.parquet") for s in ("train", "valid", "test"))
    feats = schema["features"]
    num = feats["numeric"]
    cats = feats["categorical"]
    X = lambda d: d[num + cats]
    pre = ColumnTransformer([("num", "passthrough", num),
                             ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                                    encoded_missing_value=-1), cats)])
    est_cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    cat_mask = [False] * len(num) + [True] * len(cats)
    pos = schema.get("positive_label")

    def score(model, d):
        y = d[target]
        if metric == "rmse": return float(np.sqrt(skm.mean_squared_error(y, model.predict(X(d)))))
        p = model.predict_proba(X(d))
        classes = list(model.classes_)
        if metric == "roc_auc": return float(skm.roc_auc_score(y == pos, p[:, classes.index(pos)]))
        return float(skm.log_loss(y, p, labels=classes))

    better = (lambda a, b: a > b) if metric == "roc_auc" else (lambda a, b: a < b)
    best, best_params = None, None
    for lr, leaves, l2 in product([0.03, 0.1], [15, 31], [0.0, 1.0]):
        params = dict(learning_rate=lr, max_leaf_nodes=leaves, l2_regularization=l2, max_iter=400,
                      early_stopping=True, random_state=0, categorical_features=cat_mask)
        if task != "regression" and metric == "roc_auc": params["class_weight"] = None
        m = make_pipeline(pre, est_cls(**params)).fit(X(tr), tr[target])
        s = score(m, va)
        if best is None or better(s, best): best, best_params = s, params
    final = make_pipeline(pre, est_cls(**best_params)).fit(X(pd.concat([tr, va])), pd.concat([tr, va])[target])
    return score(final, te), {k: best_params[k] for k in ("learning_rate", "max_leaf_nodes", "l2_regularization")}


def markdown_table(df: pd.DataFrame) -> str:
    "A GitHub markdown table (no extra dependency)."
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, (df, target, metric) in make_tables(args.rows).items():
            path = Path(d) / f"{name}.csv"
            df.to_csv(path, index=False)
            t0 = time.perf_counter()
            r = subprocess.run([CLI, "run", "--data", str(path), "--target", target, "--workspace", f"{d}/ws_{name}",
                                "-p", f"tuning.metric={metric}", "--json"], capture_output=True, text=True, cwd=d)
            secs = time.perf_counter() - t0
            if r.returncode != 0 and not r.stdout: sys.exit(f"{name}: mlops-nb run failed\n{r.stderr[-3000:]}")
            s = json.loads(r.stdout)
            hand, hand_params = by_hand(Path(s["run_dir"]), target, s["task"], metric, s["schema"])
            ours = s["metrics"][metric]
            best = json.loads((Path(s["run_dir"]) / "tune" / "best.json").read_text())
            rows.append({"table": name, "task": s["task"], "metric": metric, "mlops-nb champion": round(ours, 4),
                         "by hand (sklearn)": round(hand, 4), "difference": round(ours - hand, 4),
                         "family chosen": best.get("family"), "promoted": (s.get("model") or {}).get("promoted"),
                         "run seconds": round(secs, 1), "hand params": hand_params})
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    md = [f"# Bring-your-own-data champion vs. a careful hand-made model", "",
          f"`{' '.join(['.venv/bin/python', 'bench/byod_vs_sklearn.py', '--rows', str(args.rows)])}` on "
          f"{platform.machine()} ({platform.python_version()}), {time.strftime('%Y-%m-%d')}; one run, both on the "
          "same split and test rows. `difference` is champion minus hand (higher is better for roc_auc, lower for "
          "log_loss and rmse).", "", markdown_table(table.drop(columns=["hand params"])), "",
          "Hand-picked parameters: " + "; ".join(f"{r['table']}: {r['hand params']}" for r in rows), ""]
    (HERE / "byod_vs_sklearn.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
