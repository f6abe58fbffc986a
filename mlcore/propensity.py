"""Propensity training runs (the Django glue of mlcore.engine.propensity): training rows
from the touchpoint log (mlcore.training), the engine on its default device, the
scikit-learn baselines on the same split, the artifact in the database, and the champion
rule.

Champion rule: the current champion is scored on the challenger's validation rows (its
own channel/creative mapping; an arm it never saw is its "unknown" index); the challenger
is promoted only when its validation AUC is strictly higher (a tie keeps the champion: no
churn of scores for nothing). A challenger that loses stays a succeeded, non-champion
version with the comparison in its metrics ("champion_comparison"). The first version, or
one facing a champion that cannot be scored (missing artifact, other features), wins.

A customer's single score (CustomerScore, what `propensity >= x` segments read): P(goal)
averaged over the (channel, creative) arms of the training sends, weighted by how often
each was sent (the top SCORE_ARMS arms): the chance a customer converts after a send like
the ones we make. The max over arms would favour rare arms with noisy estimates; the
campaign-agnostic "unknown" arm is never trained.
"""

from __future__ import annotations

import pickle
from dataclasses import fields
from datetime import datetime

import numpy as np
from django.utils import timezone

from mlcore import registry
from mlcore.artifacts import ArtifactError, artifact_load, artifact_save
from mlcore.models import ModelVersion
from mlcore.training import TrainingSet, encode_arms, training_set

MIN_ROWS = 20
SCORE_ARMS = 20
ALGORITHM = "mlp"
# Options of a run (API/admin "train now", the nightly task): name -> default.
DEFAULTS = {
    "days": 90,
    "campaign_ids": None,
    "valid_fraction": 0.2,
    "seed": 0,
    "device": None,  # None: the engine's default_device() (cuda when there is one)
    "max_epochs": 50,
    "batch_size": 65536,
    "hidden": [256, 128],
    "lr": 3e-3,
    "patience": 3,
    "baselines": True,
}


class TrainingFailed(Exception):
    """Not enough usable data to train or compare (recorded on the failed version)."""


def check_rows(data: TrainingSet, valid_idx: np.ndarray, *, what: str) -> None:
    if len(data) < MIN_ROWS:
        raise TrainingFailed(f"{len(data)} {what} rows; training needs at least {MIN_ROWS}")
    if len(np.unique(data.y)) < 2:
        raise TrainingFailed(f"every {what} row has the same outcome ({int(data.y[0])}): nothing to learn")
    if len(np.unique(data.y[valid_idx])) < 2:
        raise TrainingFailed("the validation rows hold one outcome only: AUC is undefined; train on more days")


def propensity_train(*, now: datetime | None = None, **options) -> ModelVersion:
    """Train a propensity challenger (options: DEFAULTS), compare it with the champion on
    the same validation rows, promote it (and score every customer) when it wins. Returns
    the version (succeeded, champion or not). A run that cannot train is recorded as a
    failed version and raises (TrainingFailed or the engine's error)."""
    from mlcore.engine.baselines import train_baselines
    from mlcore.engine.propensity import (
        PropensityConfig,
        PropensityData,
        default_device,
        split_indices,
        train_propensity,
    )
    from mlcore.scores import challenger_finish, champion_install

    params = {**DEFAULTS, **options}
    now = now or timezone.now()
    device = params["device"] or default_device()
    version = ModelVersion.objects.create(
        task=ModelVersion.Task.PROPENSITY, algorithm=ALGORITHM, params=params, device=device
    )
    with registry.recorded_run(version) as elapsed_ms:
        data = training_set(days=params["days"], now=now, campaign_ids=params["campaign_ids"], include_held_out=False)
        if len(data) < 2:
            raise TrainingFailed(f"{len(data)} sent rows; training needs at least {MIN_ROWS}")
        train_idx, valid_idx = split_indices(len(data), params["valid_fraction"], params["seed"])
        check_rows(data, valid_idx, what="sent")
        engine_data = PropensityData(data.X, data.channel, data.creative, data.y, list(data.feature_names))
        config_names = {f.name for f in fields(PropensityConfig)}
        config = PropensityConfig(
            **{k: v for k, v in params.items() if k in config_names and k not in ("hidden",)},
            hidden=tuple(params["hidden"]),
        )
        trained = train_propensity(
            engine_data, len(data.channels), len(data.creatives), config, device, train_idx, valid_idx
        )
        baselines = train_baselines(engine_data, train_idx, valid_idx) if params["baselines"] else {}
        # Plain JSON numbers in the artifact's metrics: a numpy scalar there would make the
        # weights-only load refuse the artifact.
        trained.metrics, trained.curve = _json(trained.metrics), _json(trained.curve)
        artifact_save(version, trained.to_bytes())

        arms = _score_arms(data)
        comparison = _compare(data, valid_idx, trained.metrics.get("auc"))
        metrics = {
            **_json(trained.metrics),
            "baselines": _json(baselines),
            "rows": len(data),
            "positive_rate": float(data.y.mean()),
            "champion_comparison": comparison,
        }
        fields_done = {
            "metrics": metrics,
            "result": {"curve": _json(trained.curve)},
            "params": {
                **params,
                "device": device,
                "feature_names": list(data.feature_names),
                "channels": list(data.channels),
                "creatives": [int(c) for c in data.creatives],
                "score_arms": arms,
            },
            "device": str(trained.metrics.get("device") or device),
        }
        scored = challenger_finish(version, elapsed_ms, fields_done, promote=comparison["promote"], now=now)
    if scored is not None:
        champion_install(version, *scored)
    return version


def _json(value):
    """Engine numbers as plain JSON (numpy scalars, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _score_arms(data: TrainingSet) -> list[dict]:
    """The most-sent (channel, creative) arms with their share of those sends."""
    pairs, counts = np.unique(np.column_stack([data.channel, data.creative]), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:SCORE_ARMS]
    total = counts[order].sum()
    return [
        {
            "channel": data.channels[int(pairs[i, 0])],
            "creative": int(data.creatives[int(pairs[i, 1])]),
            "weight": float(counts[i] / total),
        }
        for i in order
    ]


def load_model(version: ModelVersion, device: str | None = None):
    """The version's TrainedPropensity on `device` (default: the engine's default device,
    so a GPU worker scores every customer on its GPU and any other host on its CPU)."""
    from mlcore.engine.propensity import TrainedPropensity, default_device

    return TrainedPropensity.from_bytes(artifact_load(version), device=device or default_device())


def propensity_predict(version: ModelVersion, X: np.ndarray, channel_labels, creative_ids, model=None) -> np.ndarray:
    """P(goal) for each row of decision features with its channel label and creative id,
    by `version`'s model (arms it never saw score as its "unknown" arm)."""
    model = model or load_model(version)
    channel, creative = encode_arms(
        version.params["channels"], version.params["creatives"], channel_labels, creative_ids
    )
    return model.predict(np.asarray(X, dtype=np.float32), channel, creative)


def propensity_customer_scores(version: ModelVersion, X: np.ndarray) -> np.ndarray:
    """Each row's single score: the send-share-weighted mean P(goal) over the score arms."""
    model = load_model(version)
    n = len(X)
    total = np.zeros(n, dtype=np.float64)
    for arm in version.params["score_arms"]:
        total += arm["weight"] * propensity_predict(
            version, X, np.full(n, arm["channel"], dtype=object), np.full(n, arm["creative"]), model=model
        )
    return total


def propensity_arm_scores(
    customer_ids, arms: list[tuple[str, int]], *, at: datetime | None = None, version: ModelVersion | None = None
) -> np.ndarray | None:
    """P(goal) of each customer (rows) for each (channel label, creative id) arm (columns)
    by the champion (or `version`), from decision features at `at`; None without a
    champion. For policies that pick an arm per customer."""
    from mlcore.training import decision_features

    version = version or registry.champion(ModelVersion.Task.PROPENSITY)
    if version is None:
        return None
    X = decision_features(customer_ids, at=at)
    model = load_model(version)
    n = len(X)
    out = np.zeros((n, len(arms)), dtype=np.float64)
    for column, (channel_label, creative_id) in enumerate(arms):
        out[:, column] = propensity_predict(
            version, X, np.full(n, channel_label, dtype=object), np.full(n, int(creative_id)), model=model
        )
    return out


def _compare(data: TrainingSet, valid_idx: np.ndarray, challenger_auc: float | None) -> dict:
    from mlcore.engine.metrics import classification_metrics

    champion = registry.champion(ModelVersion.Task.PROPENSITY)
    if champion is None:
        return {"champion_id": None, "promote": True, "reason": "no champion yet"}
    answer = {"champion_id": champion.pk, "challenger_auc": challenger_auc}
    try:
        if list(champion.params.get("feature_names", [])) != list(data.feature_names):
            raise ValueError("the champion was trained on other features")
        valid = data.rows(valid_idx)
        p = propensity_predict(
            champion,
            valid.X,
            np.asarray(valid.channels, dtype=object)[valid.channel],
            np.asarray(valid.creatives, dtype=np.int64)[valid.creative],
        )
    except (ArtifactError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        return {**answer, "champion_auc": None, "promote": True, "reason": f"the champion cannot be scored: {exc}"}
    champion_metrics = classification_metrics(valid.y, p)
    champion_auc = champion_metrics.get("auc")
    promote = challenger_auc is not None and (champion_auc is None or challenger_auc > champion_auc)
    reason = (
        "higher validation AUC than the champion"
        if promote
        else "validation AUC not higher than the champion's (a tie keeps the champion)"
    )
    return {
        **answer,
        "champion_auc": champion_auc,
        "champion_log_loss": champion_metrics.get("log_loss"),
        "promote": bool(promote),
        "reason": reason,
    }
