"""Propensity training benchmark, standalone (no Django, no database), issue 5 point 10:

    python3 bench/train.py [--rows 100000] [--features 16] [--batch-size 65536] [--json OUT.json]
    python3 bench/train.py --rows 20000000            # on the GPU machine

Generates `--rows` rows of planted-signal data (mlcore.engine.train.synthetic_propensity_data;
80% train, 20% validation by split_indices) and reports:

1. the default propensity model (PropensityConfig()) trained to early stopping on cuda when
   there is one: validation AUC, epochs, samples/s (training rows processed per second of time
   in training steps; after a short warm-up run so that CUDA start-up is not counted);
2. the same model, same data, same batch size on this machine's CPU, for --cpu-steps training
   steps (a full CPU run would take hours at GPU sizes): samples/s, and the GPU/CPU ratio;
   without a GPU, line 1 is the CPU run and the ratio is not measured;
3. the scikit-learn baselines (LogisticRegression, HistGradientBoosting) on the same split,
   fitted on at most --baseline-rows training rows (HistGradientBoosting gains little past a
   few million rows and would take minutes), scored on the same validation rows; beside them
   the AUC of the true planted probabilities, the best any model can do;
4. decision throughput from bench/decide.py's decisions_benchmark(), if that file exists;
5. the goals: >= 10M samples/s on an H100, >= 10x the CPU, AUC >= HistGradientBoosting - 0.005.

--sweep also times a few batch sizes, the eager step (no CUDA graph) and the embedding lookup
for 3 epochs each (torch.compile: run with --compile).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mlcore.engine.baselines import train_baselines  # noqa: E402
from mlcore.engine.metrics import auc  # noqa: E402
from mlcore.engine.propensity import PropensityConfig, device_name, split_indices, train_propensity  # noqa: E402
from mlcore.engine.train import synthetic_propensity_data  # noqa: E402

GOAL_SAMPLES_PER_S = 10_000_000
GOAL_GPU_OVER_CPU = 10.0
GOAL_AUC_GAP = 0.005


def steady_samples_per_s(curve: list[dict]) -> float | None:
    """Samples/s over the epochs after the first (no allocator growth or compilation in them)."""
    rows = curve[1:]
    seconds = sum(r["train_seconds"] for r in rows)
    return sum(r["samples"] for r in rows) / seconds if rows and seconds > 0 else None


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 1e6:,.2f}M" if value >= 1e6 else f"{value / 1e3:,.1f}k"


def decisions() -> dict | None:
    """bench/decide.py (another part of issue 5) measures picks/s; optional here."""
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from decide import decisions_benchmark  # type: ignore[import-not-found]
    except ImportError as error:
        print(f"decisions: bench/decide.py decisions_benchmark() not available ({error})")
        return None
    try:
        result = decisions_benchmark()
    except Exception as error:  # a broken neighbour must not hide the training numbers
        print(f"decisions: decisions_benchmark() failed: {error!r}")
        return {"error": repr(error)}
    return result if isinstance(result, dict) else {"result": str(result)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of synthetic data (train + validation)")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--creatives", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=int, help=f"default {PropensityConfig.batch_size} on cuda, 4096 on a CPU-only machine"
    )
    parser.add_argument("--hidden", default=",".join(map(str, PropensityConfig.hidden)), help="e.g. 256,128")
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"maximum epochs (default {PropensityConfig.max_epochs} on cuda, 5 on a CPU-only machine)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (cuda)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="train eagerly, without a captured step")
    parser.add_argument("--cpu-steps", type=int, default=20, help="training steps timed on the CPU")
    parser.add_argument("--baseline-rows", type=int, default=2_000_000, help="training rows for the baselines")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--skip-decisions", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also time batch sizes 16k..256k and compile (cuda)")
    parser.add_argument("--json", help="write all numbers to this file")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if args.epochs is None:
        # Without a GPU the default run must end in about a minute (`make bench`).
        args.epochs = PropensityConfig.max_epochs if cuda else 5
    if args.batch_size is None:
        # A CPU-only run has few rows: 65,536-row batches would leave it a handful of steps.
        args.batch_size = PropensityConfig.batch_size if cuda else 4096
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), GPU: {device_name('cuda') if cuda else 'none'}"
    )
    started = time.perf_counter()
    data = synthetic_propensity_data(args.rows, args.features, args.channels, args.creatives, args.seed)
    train_idx, valid_idx = split_indices(args.rows, 0.2, args.seed)
    print(
        f"training set: {train_idx.size:,} rows ({valid_idx.size:,} validation), {args.features} features, "
        f"{args.channels} channels, {args.creatives} creatives, positive rate {data.y.mean():.3f} "
        f"(generated in {time.perf_counter() - started:.1f} s)"
    )
    bayes = auc(data.y[valid_idx], data.true_p[valid_idx])
    config = PropensityConfig(
        hidden=tuple(int(h) for h in args.hidden.split(",")),
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        seed=args.seed,
        compile=args.compile,
        cuda_graph=not args.no_cuda_graph,
    )
    report: dict = {
        "rows": args.rows,
        "n_train": int(train_idx.size),
        "n_valid": int(valid_idx.size),
        "config": vars(args),
    }

    main_device = "cuda" if cuda else "cpu"
    if cuda:
        # Warm-up: CUDA context, cuBLAS handles and kernel caches, so the timed run measures training.
        warm = synthetic_propensity_data(200_000, args.features, args.channels, args.creatives, args.seed + 1)
        train_propensity(warm, args.channels, args.creatives, replace(config, max_epochs=1), "cuda")
    trained = train_propensity(data, args.channels, args.creatives, config, main_device, train_idx, valid_idx)
    m = trained.metrics
    steady = steady_samples_per_s(trained.curve)
    print(
        f"propensity MLP {config.hidden} on {m['device']} ({m['device_name']}): AUC {m['auc']:.4f}, "
        f"log loss {m['log_loss']:.4f}, {m['epochs']} epochs (best {m['best_epoch']}), "
        f"{m['train_seconds']:.1f} s training, {fmt_rate(m['samples_per_s'])} samples/s "
        f"(after epoch 1: {fmt_rate(steady)}), batch {config.batch_size}, bf16 {m['amp']}, compiled {m['compiled']}, "
        f"CUDA graph {m['cuda_graph']}"
        + (f" (capture failed: {m['cuda_graph_error']})" if m["cuda_graph_error"] else "")
    )
    report["model"] = {k: v for k, v in m.items() if k != "calibration"} | {"steady_samples_per_s": steady}
    report["curve"] = trained.curve
    gpu_rate = m["samples_per_s"] if cuda else None

    cpu_rate = None if cuda else m["samples_per_s"]
    if cuda and args.cpu_steps > 0:
        # Same data, same model and batch size, on the CPU: a fixed number of steps of one epoch
        # (validated on a 20,000-row slice so the CPU number is about training, not scoring).
        cpu_config = replace(config, max_epochs=1, max_steps_per_epoch=args.cpu_steps, compile=False)
        cpu = train_propensity(data, args.channels, args.creatives, cpu_config, "cpu", train_idx, valid_idx[:20_000])
        cpu_rate = cpu.metrics["samples_per_s"]
        print(
            f"same model on CPU ({cpu.metrics['device_name']}): {args.cpu_steps} steps of {config.batch_size} rows, "
            f"{fmt_rate(cpu_rate)} samples/s"
        )
        report["cpu"] = {"samples_per_s": cpu_rate, "steps": args.cpu_steps, "device_name": cpu.metrics["device_name"]}
    ratio = gpu_rate / cpu_rate if gpu_rate and cpu_rate else None

    if args.sweep and cuda:
        sweep = []
        variants = [(b, False, config.one_hot_max, True) for b in (16384, 65536, 131072, 262144)]
        variants += [(65536, False, config.one_hot_max, False), (65536, False, 0, False)]
        for batch, compiled, one_hot_max, graph in variants:
            run = train_propensity(
                data,
                args.channels,
                args.creatives,
                replace(
                    config,
                    batch_size=batch,
                    compile=compiled,
                    one_hot_max=one_hot_max,
                    cuda_graph=graph,
                    max_epochs=3,
                    patience=10,
                ),
                "cuda",
                train_idx,
                valid_idx,
            )
            row = {
                "batch_size": batch,
                "compile": compiled,
                "embedding": "one-hot" if one_hot_max else "lookup",
                "cuda_graph": run.metrics["cuda_graph"],
                "steady_samples_per_s": steady_samples_per_s(run.curve),
                "auc_after_3_epochs": run.metrics["auc"],
            }
            sweep.append(row)
            print(
                f"sweep: batch {batch:>7}, compile {compiled!s:5}, {row['embedding']:>7} embedding, "
                f"CUDA graph {row['cuda_graph']!s:5}: {fmt_rate(row['steady_samples_per_s'])} samples/s, "
                f"AUC after 3 epochs {row['auc_after_3_epochs']:.4f}"
            )
        report["sweep"] = sweep

    hgb_auc = None
    if not args.skip_baselines:
        baselines = train_baselines(data, train_idx, valid_idx, max_train_rows=args.baseline_rows, seed=args.seed)
        for name, b in baselines.items():
            print(
                f"baseline {name}: AUC {b['auc']:.4f}, log loss {b['log_loss']:.4f}, fit {b['fit_seconds']:.1f} s "
                f"on {b['n_train']:,} rows"
            )
        report["baselines"] = {k: {kk: vv for kk, vv in v.items() if kk != "calibration"} for k, v in baselines.items()}
        hgb_auc = baselines["hist_gradient_boosting"]["auc"]
    print(f"true planted probabilities (the best possible): AUC {bayes:.4f}")
    report["bayes_auc"] = bayes

    if not args.skip_decisions:
        report["decisions"] = decisions()

    print(f"\ngoals ({args.rows:,} rows, {train_idx.size:,} training):")
    rows = [
        (
            "GPU samples/s",
            fmt_rate(gpu_rate),
            ">= 10.00M",
            None if gpu_rate is None else gpu_rate >= GOAL_SAMPLES_PER_S,
        ),
        ("CPU samples/s (same model, batch)", fmt_rate(cpu_rate), "", None),
        ("GPU / CPU", "n/a" if ratio is None else f"{ratio:.1f}x", ">= 10x", None if ratio is None else ratio >= 10),
        (
            "AUC MLP vs HGB",
            f"{m['auc']:.4f} vs {hgb_auc:.4f}" if hgb_auc is not None else f"{m['auc']:.4f}",
            f">= {hgb_auc - GOAL_AUC_GAP:.4f}" if hgb_auc is not None else "",
            None if hgb_auc is None else m["auc"] >= hgb_auc - GOAL_AUC_GAP,
        ),
    ]
    for name, value, goal, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        print(f"  {name:<36} {value:>22}  {goal:<12} {verdict}")
    if not cuda:
        print("  (no CUDA GPU on this machine: the GPU goals are measured on the lent GPU machine)")
    report["goals"] = {"gpu_samples_per_s": gpu_rate, "cpu_samples_per_s": cpu_rate, "ratio": ratio, "hgb_auc": hgb_auc}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
