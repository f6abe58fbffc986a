"""Train the propensity model from a saved feature file, without Django or a database:

    python -m mlcore.engine.train --data FEATURES.npz --out MODEL.bin [--device auto|cuda|cpu]
        [--epochs 50] [--batch-size 65536] [--patience 3] [--valid-fraction 0.2] [--seed 0]
        [--baselines] [--baseline-rows N]
    python -m mlcore.engine.train --synthetic 1000000 --out MODEL.bin      # planted-signal data

FEATURES.npz holds X (n, d) float32, channel (n,) and creative (n,) int64 indices, y (n,) 0/1
and feature_names (mlcore.engine.propensity.save_propensity_data writes one). Prints one JSON
object: the validation metrics, the per-epoch curve and, with --baselines, the scikit-learn
baselines on the same split. MODEL.bin is TrainedPropensity.to_bytes().

`synthetic_propensity_data` is the planted-signal generator the tests and bench/train.py use.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from mlcore.engine.propensity import (
    PropensityConfig,
    PropensityData,
    load_propensity_data,
    split_indices,
    train_propensity,
)

__all__ = ["SYNTHETIC_MIN_FEATURES", "main", "synthetic_propensity_data"]

SYNTHETIC_MIN_FEATURES = 10


def synthetic_propensity_data(
    n: int, d: int = 16, n_channels: int = 4, n_creatives: int = 12, seed: int = 0
) -> PropensityData:
    """n rows with a known P(goal) (kept in .true_p), about 18% positives.

    The logit is linear in x0..x2 plus terms a linear model cannot express: an x3*x4 interaction,
    sin(1.5 x5), a step at x6 > 0.5, |x7|, a per-channel slope on x8 (a channel that works for
    one kind of customer and not another) and a per-creative slope on x9; plus channel and
    creative main effects. Features past x9 are noise. The raw columns come out on very
    different scales and offsets (as money, days and rates do), so the model's own
    standardisation is exercised.
    """
    if d < SYNTHETIC_MIN_FEATURES:
        raise ValueError(f"synthetic data needs d >= {SYNTHETIC_MIN_FEATURES}, got {d}")
    rng = np.random.default_rng(seed)
    # Effects drawn from a fixed stream, so every seed plants the same structure on fresh rows.
    fixed = np.random.default_rng(12345)
    channel_effect = np.linspace(-0.4, 0.4, n_channels)
    channel_slope = np.linspace(-0.8, 0.8, n_channels)
    creative_effect = fixed.normal(0.0, 0.35, n_creatives)
    creative_slope = fixed.normal(0.0, 0.5, n_creatives)
    scale = 10.0 ** fixed.uniform(-1.0, 2.0, d)
    offset = fixed.normal(0.0, 3.0, d) * scale

    Z = rng.standard_normal((n, d), dtype=np.float32)
    channel = rng.integers(0, n_channels, n)
    creative = rng.integers(0, n_creatives, n)
    logit = (
        -2.3
        + 0.7 * Z[:, 0]
        - 0.5 * Z[:, 1]
        + 0.3 * Z[:, 2]
        + 0.8 * Z[:, 3] * Z[:, 4]
        + 0.8 * np.sin(1.5 * Z[:, 5])
        + 0.6 * (Z[:, 6] > 0.5)
        + 0.5 * (np.abs(Z[:, 7]) - 0.8)
        + channel_effect[channel]
        + channel_slope[channel] * Z[:, 8]
        + creative_effect[creative]
        + creative_slope[creative] * Z[:, 9]
    )
    true_p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n, dtype=np.float32) < true_p).astype(np.float32)
    X = (Z * scale.astype(np.float32) + offset.astype(np.float32)).astype(np.float32)
    return PropensityData(X, channel, creative, y, [f"x{i}" for i in range(d)], true_p.astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="feature file (.npz with X, channel, creative, y, feature_names)")
    source.add_argument("--synthetic", type=int, metavar="N", help="train on N rows of planted-signal data")
    parser.add_argument("--out", required=True, help="where to write the model artifact")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--epochs", type=int, default=PropensityConfig.max_epochs, help="maximum epochs")
    parser.add_argument("--batch-size", type=int, default=PropensityConfig.batch_size)
    parser.add_argument("--patience", type=int, default=PropensityConfig.patience)
    parser.add_argument("--lr", type=float, default=PropensityConfig.lr)
    parser.add_argument("--valid-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-channels", type=int, help="embedding rows (default: max channel index + 1)")
    parser.add_argument("--n-creatives", type=int, help="embedding rows (default: max creative index + 1)")
    parser.add_argument("--baselines", action="store_true", help="also fit the scikit-learn baselines")
    parser.add_argument("--baseline-rows", type=int, help="fit the baselines on at most this many training rows")
    args = parser.parse_args(argv)

    try:
        data = (
            load_propensity_data(args.data) if args.data else synthetic_propensity_data(args.synthetic, seed=args.seed)
        )
        n_channels = args.n_channels or int(data.channel.max()) + 1
        n_creatives = args.n_creatives or int(data.creative.max()) + 1
        config = replace(
            PropensityConfig(),
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            patience=args.patience,
            lr=args.lr,
            seed=args.seed,
        )
        train_idx, valid_idx = split_indices(len(data), args.valid_fraction, args.seed)
        trained = train_propensity(data, n_channels, n_creatives, config, args.device, train_idx, valid_idx)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with open(args.out, "wb") as handle:
        handle.write(trained.to_bytes())
    report = {"rows": len(data), "features": data.feature_names, "metrics": trained.metrics, "curve": trained.curve}
    if args.baselines:
        from mlcore.engine.baselines import train_baselines

        report["baselines"] = train_baselines(data, train_idx, valid_idx, args.baseline_rows, args.seed)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
