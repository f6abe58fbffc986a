"""The propensity engine (mlcore.engine.propensity, metrics, baselines, train): plain unittest
cases with no Django, so the same module runs on the GPU box (`python3 -m unittest
tests.test_engine_propensity`). CPU cases always run on small data; PropensityGpuTests runs only
where torch sees a CUDA GPU."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import unittest

import numpy as np
import torch

from mlcore.engine.baselines import train_baselines
from mlcore.engine.metrics import auc, average_ranks, calibration, classification_metrics
from mlcore.engine.propensity import (
    PropensityConfig,
    PropensityData,
    TrainedPropensity,
    default_device,
    load_propensity_data,
    resolve_device,
    save_propensity_data,
    split_indices,
    train_propensity,
)
from mlcore.engine.train import main as train_main
from mlcore.engine.train import synthetic_propensity_data

# Small enough for a shared 2-core CI box: 20,000 rows, a 32-16 MLP, batches of 1,024.
SMALL = PropensityConfig(hidden=(32, 16), batch_size=1024, lr=0.01, max_epochs=12, patience=3, embed_dim=4)


class MetricsTests(unittest.TestCase):
    def test_metrics_on_a_hand_computed_example(self):
        y = np.array([0, 0, 1, 1])
        p = np.array([0.1, 0.4, 0.35, 0.8])
        m = classification_metrics(y, p)
        # Pairs (positive, negative): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4.
        self.assertEqual(m["auc"], 0.75)
        self.assertAlmostEqual(m["log_loss"], -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4, 12)
        self.assertAlmostEqual(m["brier"], (0.01 + 0.16 + 0.4225 + 0.04) / 4, 12)
        self.assertEqual([(row["bin"], row["count"]) for row in m["calibration"]], [(1, 1), (3, 1), (4, 1), (8, 1)])
        self.assertEqual(
            [(row["predicted"], row["observed"]) for row in m["calibration"]],
            [(0.1, 0.0), (0.35, 1.0), (0.4, 0.0), (0.8, 1.0)],
        )
        self.assertAlmostEqual(m["ece"], (0.1 + 0.65 + 0.4 + 0.2) / 4, 12)
        self.assertEqual((m["n"], m["positive_rate"]), (4, 0.5))

    def test_ties_count_half_and_one_class_has_no_auc(self):
        # Positive 0.5 ties negative 0.5 (half) and beats 0.2; positive 0.9 beats both: 3.5 / 4.
        self.assertEqual(auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]), 0.875)
        self.assertIsNone(auc([1, 1, 1], [0.2, 0.5, 0.9]))
        np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])

    def test_auc_matches_the_pairwise_definition_on_random_data(self):
        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, 300)
        p = np.round(rng.random(300), 2)  # rounded: plenty of ties
        pos, neg = p[y == 1], p[y == 0]
        pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
            pos.size * neg.size
        )
        self.assertAlmostEqual(auc(y, p), pairwise, 12)

    def test_probability_one_lands_in_the_last_bin_and_log_loss_is_clipped(self):
        self.assertEqual([row["bin"] for row in calibration([1, 0], [1.0, 0.0])], [0, 9])
        self.assertAlmostEqual(classification_metrics([0], [1.0])["log_loss"], -math.log1p(-(1.0 - 1e-15)), 9)

    def test_mismatched_lengths_are_refused(self):
        with self.assertRaisesRegex(ValueError, "y has 2 rows but p has 3"):
            classification_metrics([0, 1], [0.1, 0.2, 0.3])


class DataAndSplitTests(unittest.TestCase):
    def test_split_is_deterministic_disjoint_and_complete(self):
        train, valid = split_indices(10, 0.2, seed=0)
        again_train, again_valid = split_indices(10, 0.2, seed=0)
        np.testing.assert_array_equal(train, again_train)
        np.testing.assert_array_equal(valid, again_valid)
        self.assertEqual((train.size, valid.size), (8, 2))
        self.assertEqual(sorted(np.concatenate([train, valid]).tolist()), list(range(10)))
        self.assertEqual(sorted(train.tolist()), train.tolist())
        other = [split_indices(1000, 0.2, seed=s)[1].tolist() for s in (0, 1)]
        self.assertNotEqual(other[0], other[1])

    def test_split_refuses_nonsense(self):
        with self.assertRaisesRegex(ValueError, "valid_fraction"):
            split_indices(10, 1.0)
        with self.assertRaisesRegex(ValueError, "at least 2 rows"):
            split_indices(1)

    def test_bad_rows_are_named(self):
        X = np.zeros((3, 2), dtype=np.float32)
        X[1, 1] = np.nan
        with self.assertRaisesRegex(ValueError, "X row 1 feature 'b' is not a finite number"):
            PropensityData(X, [0, 0, 0], [0, 0, 0], [0, 1, 0], ["a", "b"])
        with self.assertRaisesRegex(ValueError, "y row 2 is 2.0, expected 0 or 1"):
            PropensityData(np.zeros((3, 2)), [0, 0, 0], [0, 0, 0], [0, 1, 2])
        with self.assertRaisesRegex(ValueError, "channel has 2 rows but X has 3"):
            PropensityData(np.zeros((3, 2)), [0, 0], [0, 0, 0], [0, 1, 0])
        data = PropensityData(np.zeros((3, 2)), [0, 5, 0], [0, 0, 0], [0, 1, 0])
        with self.assertRaisesRegex(ValueError, r"channel row 1 is 5, outside 0..3"):
            data.check_indices(4, 2)

    def test_feature_file_round_trip(self):
        data = synthetic_propensity_data(50, d=10, seed=4)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "features.npz")
            save_propensity_data(data, path)
            loaded = load_propensity_data(path)
        for name in ("X", "channel", "creative", "y"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))
        self.assertEqual(loaded.feature_names, [f"x{i}" for i in range(10)])

    def test_synthetic_data_has_its_planted_structure(self):
        data = synthetic_propensity_data(20_000, d=12, seed=1)
        self.assertEqual(data.X.shape, (20_000, 12))
        self.assertEqual((data.X.dtype, data.channel.dtype, data.y.dtype), (np.float32, np.int64, np.float32))
        self.assertEqual((int(data.channel.max()), int(data.creative.max())), (3, 11))
        # The observed rate follows the planted probability.
        self.assertAlmostEqual(float(data.y.mean()), float(data.true_p.mean()), delta=0.01)
        self.assertTrue(0.12 < data.y.mean() < 0.25)

    def test_device_resolution(self):
        self.assertEqual(resolve_device(None), default_device())
        self.assertEqual(resolve_device("cpu"), "cpu")
        with self.assertRaisesRegex(ValueError, "device must be auto, cuda or cpu"):
            resolve_device("tpu")
        if not torch.cuda.is_available():
            with self.assertRaisesRegex(ValueError, "no CUDA GPU"):
                resolve_device("cuda")


class PropensityCpuTests(unittest.TestCase):
    """One small model trained once on CPU; each test reads a different property of it."""

    @classmethod
    def setUpClass(cls):
        cls.data = synthetic_propensity_data(20_000, d=10, seed=0)
        cls.train_idx, cls.valid_idx = split_indices(20_000, 0.2, seed=0)
        cls.trained = train_propensity(cls.data, 4, 12, SMALL, "cpu", cls.train_idx, cls.valid_idx)

    def test_it_learns_the_planted_signal(self):
        m = self.trained.metrics
        bayes = auc(self.data.y[self.valid_idx], self.data.true_p[self.valid_idx])
        self.assertGreater(m["auc"], 0.79)  # a coin is 0.5; the true probabilities score `bayes`
        self.assertLess(m["auc"], bayes + 0.01)
        # Better than predicting the base rate for everyone.
        rate = float(self.data.y[self.train_idx].mean())
        constant = classification_metrics(self.data.y[self.valid_idx], np.full(self.valid_idx.size, rate))
        self.assertLess(m["log_loss"], constant["log_loss"] - 0.05)
        self.assertEqual((m["device"], m["n_train"], m["n_valid"], m["batch_size"]), ("cpu", 16_000, 4_000, 1024))
        self.assertFalse(m["amp"])  # bf16 autocast is for cuda only
        self.assertGreater(m["samples_per_s"], 0)
        self.assertEqual(sum(row["count"] for row in m["calibration"]), 4_000)

    def test_the_kept_weights_are_the_best_epoch(self):
        curve = self.trained.curve
        self.assertEqual([row["epoch"] for row in curve], list(range(1, len(curve) + 1)))
        self.assertEqual(self.trained.metrics["epochs"], len(curve))
        best = min(curve, key=lambda row: row["valid_loss"])
        self.assertEqual(self.trained.metrics["best_epoch"], best["epoch"])
        # The reported metrics are those of the restored best state, not of the last epoch.
        self.assertAlmostEqual(self.trained.metrics["log_loss"], best["valid_loss"], 5)
        self.assertAlmostEqual(self.trained.metrics["auc"], best["valid_auc"], 6)

    def test_it_standardises_with_the_training_split_only(self):
        X = self.data.X[self.train_idx].astype(np.float64)
        np.testing.assert_allclose(self.trained.model.mean.numpy(), X.mean(0), rtol=1e-5)
        np.testing.assert_allclose(self.trained.model.scale.numpy(), X.std(0), rtol=1e-5)

    def test_artifact_round_trip_predicts_identically(self):
        blob = self.trained.to_bytes()
        loaded = TrainedPropensity.from_bytes(blob, device="cpu")
        rows = self.valid_idx[:500]
        args = (self.data.X[rows], self.data.channel[rows], self.data.creative[rows])
        np.testing.assert_array_equal(loaded.predict(*args), self.trained.predict(*args))
        self.assertEqual(loaded.metrics, self.trained.metrics)
        self.assertEqual(loaded.curve, self.trained.curve)
        self.assertEqual(loaded.config, SMALL)
        self.assertEqual((loaded.n_channels, loaded.n_creatives, loaded.feature_names[0]), (4, 12, "x0"))
        # The artifact loads under torch's restricted (weights_only) unpickler.
        self.assertEqual(torch.load(io.BytesIO(blob), weights_only=True)["n_creatives"], 12)

    def test_predict_checks_its_input(self):
        with self.assertRaisesRegex(ValueError, r"creative row 0 is 12, outside 0..11"):
            self.trained.predict(self.data.X[:2], [0, 0], [12, 0])
        with self.assertRaisesRegex(ValueError, "10 feature names for 3 feature columns"):
            self.trained.predict(np.zeros((1, 3)), [0], [0])
        p = self.trained.predict(self.data.X[:3], self.data.channel[:3], self.data.creative[:3])
        self.assertEqual((p.shape, p.dtype), ((3,), np.float64))
        self.assertTrue(((p > 0) & (p < 1)).all())

    def test_garbage_is_not_an_artifact(self):
        buffer = io.BytesIO()
        torch.save({"format": "something else"}, buffer)
        with self.assertRaisesRegex(ValueError, "not a propensity artifact"):
            TrainedPropensity.from_bytes(buffer.getvalue())

    def test_baselines_on_the_same_split(self):
        results = train_baselines(self.data, self.train_idx, self.valid_idx)
        self.assertEqual(set(results), {"logistic_regression", "hist_gradient_boosting"})
        lr, hgb = results["logistic_regression"], results["hist_gradient_boosting"]
        self.assertEqual((lr["n_train"], lr["n_valid"], hgb["n_train"], hgb["n_valid"]), (16_000, 4_000, 16_000, 4_000))
        # The planted interactions are invisible to a linear model, visible to trees and the MLP.
        self.assertGreater(hgb["auc"], lr["auc"] + 0.04)
        self.assertGreater(self.trained.metrics["auc"], lr["auc"] + 0.04)
        self.assertGreater(lr["fit_seconds"], 0)
        capped = train_baselines(
            self.data, self.train_idx, self.valid_idx, max_train_rows=1000, which=("logistic_regression",)
        )
        self.assertEqual((set(capped), capped["logistic_regression"]["n_train"]), ({"logistic_regression"}, 1000))


class EarlyStoppingTests(unittest.TestCase):
    def test_it_stops_patience_epochs_after_the_best(self):
        # Few rows, a wide net and a large learning rate over-fit within a few epochs.
        data = synthetic_propensity_data(3_000, d=10, seed=2)
        config = PropensityConfig(hidden=(128, 64), batch_size=128, lr=0.02, max_epochs=50, patience=2, embed_dim=4)
        trained = train_propensity(data, 4, 12, config, "cpu")
        m = trained.metrics
        self.assertLess(m["epochs"], 50)
        self.assertEqual(m["epochs"], m["best_epoch"] + 2)
        losses = [row["valid_loss"] for row in trained.curve]
        self.assertEqual(int(np.argmin(losses)) + 1, m["best_epoch"])
        self.assertEqual((m["n_train"], m["n_valid"]), (2_400, 600))


class TrainCommandTests(unittest.TestCase):
    def test_it_trains_from_a_feature_file_and_writes_a_loadable_artifact(self):
        data = synthetic_propensity_data(4_000, d=10, seed=5)
        with tempfile.TemporaryDirectory() as tmp:
            features, model = os.path.join(tmp, "f.npz"), os.path.join(tmp, "m.bin")
            save_propensity_data(data, features)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                rc = train_main(
                    ["--data", features, "--out", model, "--device", "cpu", "--epochs", "2", "--batch-size", "512"]
                )
            self.assertEqual(rc, 0)
            report = json.loads(out.getvalue())
            with open(model, "rb") as handle:
                loaded = TrainedPropensity.from_bytes(handle.read())
        self.assertEqual((report["rows"], report["metrics"]["n_train"], report["metrics"]["epochs"]), (4_000, 3_200, 2))
        self.assertEqual([row["epoch"] for row in report["curve"]], [1, 2])
        self.assertEqual(loaded.metrics["auc"], report["metrics"]["auc"])
        self.assertEqual(loaded.config.batch_size, 512)
        # 3,200 training rows are fewer than 8 batches of 512: each step takes 3,200 // 8 rows.
        self.assertEqual(report["metrics"]["batch_size"], 400)

    def test_a_bad_feature_file_is_a_clear_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            features = os.path.join(tmp, "f.npz")
            np.savez(features, X=np.zeros((3, 2), dtype=np.float32), y=np.zeros(3))
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = train_main(["--data", features, "--out", os.path.join(tmp, "m.bin")])
        self.assertEqual(rc, 2)
        self.assertIn("lacks channel, creative", err.getvalue())


@unittest.skipUnless(torch.cuda.is_available(), "needs a CUDA GPU (runs on the lent GPU machine)")
class PropensityGpuTests(unittest.TestCase):
    """The default configuration (65,536-row batches, bf16 autocast, fused AdamW) on cuda."""

    @classmethod
    def setUpClass(cls):
        cls.data = synthetic_propensity_data(1_000_000, d=16, seed=0)
        cls.train_idx, cls.valid_idx = split_indices(1_000_000, 0.2, seed=0)
        cls.trained = train_propensity(cls.data, 4, 12, PropensityConfig(), "cuda", cls.train_idx, cls.valid_idx)

    def test_it_trains_on_the_gpu_with_mixed_precision_and_learns(self):
        m = self.trained.metrics
        self.assertEqual((m["device"], m["amp"], m["batch_size"], m["n_train"]), ("cuda", True, 65536, 800_000))
        self.assertEqual(self.trained.device, "cuda:0")
        bayes = auc(self.data.y[self.valid_idx], self.data.true_p[self.valid_idx])
        self.assertGreater(m["auc"], bayes - 0.01)
        self.assertGreater(m["samples_per_s"], 1_000_000)

    def test_the_step_runs_as_a_cuda_graph_and_eagerly_alike(self):
        self.assertTrue(self.trained.metrics["cuda_graph"], self.trained.metrics["cuda_graph_error"])
        # The plateau decay reached the captured optimizer (its learning rate is a device tensor).
        lrs = [row["lr"] for row in self.trained.curve]
        self.assertAlmostEqual(lrs[0], 3e-3, places=9)  # float32 on the device
        self.assertLess(lrs[-1], 3e-3)
        eager = train_propensity(
            self.data, 4, 12, PropensityConfig(cuda_graph=False), "cuda", self.train_idx, self.valid_idx
        )
        self.assertFalse(eager.metrics["cuda_graph"])
        self.assertAlmostEqual(eager.metrics["auc"], self.trained.metrics["auc"], delta=0.003)

    def test_a_gpu_artifact_scores_the_same_on_cpu_and_cuda(self):
        rows = self.valid_idx[:10_000]
        args = (self.data.X[rows], self.data.channel[rows], self.data.creative[rows])
        on_gpu = self.trained.predict(*args)
        blob = self.trained.to_bytes()
        np.testing.assert_array_equal(TrainedPropensity.from_bytes(blob, device="cuda").predict(*args), on_gpu)
        np.testing.assert_allclose(TrainedPropensity.from_bytes(blob, device="cpu").predict(*args), on_gpu, atol=2e-5)


if __name__ == "__main__":
    unittest.main()
