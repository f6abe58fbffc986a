"""Uplift training runs (the Django glue of mlcore.engine.uplift): sent rows (treated) and
held-out rows (control) of the campaigns that had a holdout, from mlcore.training, a T- or X-learner on
the decision features, the artifact in the database, and the champion rule.

Champion rule: the Qini coefficient (`uplift_metrics(...)["qini"]`: area between the Qini
curve and random targeting, per customer) on the challenger's validation rows; the
challenger is promoted only when strictly higher than the champion's on those rows (a tie
keeps the champion). Baselines on the same split: "response_model" (ranking by the
treated-arm conversion model alone, what a propensity score would do) and "random" (a
seeded shuffle), so the metrics say whether modelling the difference pays.

A customer's score (CustomerScore, what `uplift >= x` segments and "only persuadables"
read): the predicted incremental P(goal) of being sent the campaign.
"""

from __future__ import annotations

import pickle
from datetime import datetime

import numpy as np
from django.utils import timezone

from mlcore import registry
from mlcore.artifacts import ArtifactError, artifact_load, artifact_save
from mlcore.models import ModelVersion
from mlcore.propensity import MIN_ROWS, TrainingFailed, _json
from mlcore.training import training_set

METHODS = ("t_learner", "x_learner")
DEFAULTS = {
    "days": 90,
    "campaign_ids": None,
    "valid_fraction": 0.3,  # uplift is a difference of two rates: a larger validation set
    "seed": 0,
    "method": "t_learner",
    "baselines": True,
}


def uplift_train(*, now: datetime | None = None, **options) -> ModelVersion:
    """Train an uplift challenger (options: DEFAULTS), compare it with the champion on the
    same validation rows by Qini, promote it (and score every customer) when it wins.
    A run that cannot train is recorded as a failed version and raises."""
    from mlcore.engine.propensity import split_indices
    from mlcore.engine.uplift import fit_uplift, uplift_metrics
    from mlcore.scores import challenger_finish, champion_install

    params = {**DEFAULTS, **options}
    now = now or timezone.now()
    version = ModelVersion.objects.create(
        task=ModelVersion.Task.UPLIFT, algorithm=params["method"], params=params, device="cpu"
    )
    with registry.recorded_run(version) as elapsed_ms:
        data = training_set(days=params["days"], now=now, campaign_ids=params["campaign_ids"], include_held_out=True)
        # Only campaigns with a holdout: the sends of one without any would weigh the
        # treated arm towards its goal and audience, which no control row balances.
        if data.treated.all():
            raise TrainingFailed(
                f"{len(data)} sends and no held-out customers in the last {params['days']} days: uplift is learnt "
                "from campaigns with a holdout"
            )
        with_holdout = np.unique(data.campaign_id[~data.treated])
        data = data.rows(np.isin(data.campaign_id, with_holdout))
        treated = data.treated
        if len(data) < MIN_ROWS or treated.all():
            raise TrainingFailed(
                f"{int(treated.sum())} sent and {int((~treated).sum())} held-out rows; uplift needs both "
                f"(at least {MIN_ROWS} rows)"
            )
        train_idx, valid_idx = split_indices(len(data), params["valid_fraction"], params["seed"])
        valid_treated = treated[valid_idx]
        if valid_treated.all() or not valid_treated.any():
            raise TrainingFailed("the validation rows lack sent or held-out rows; train on more days")
        model = fit_uplift(data.X[train_idx], treated[train_idx], data.y[train_idx], params["method"], params["seed"])
        artifact_save(version, model.to_bytes())
        valid_X, valid_y = data.X[valid_idx], data.y[valid_idx]
        metrics = uplift_metrics(model.predict(valid_X), valid_treated, valid_y)
        baselines = {}
        if params["baselines"]:
            response, _control = model.predict_arms(valid_X)
            shuffled = np.random.default_rng(params["seed"]).random(len(valid_idx))
            baselines = {
                "response_model": _summary(uplift_metrics(response, valid_treated, valid_y)),
                "random": _summary(uplift_metrics(shuffled, valid_treated, valid_y)),
            }
        comparison = _compare(valid_X, valid_treated, valid_y, metrics["qini"])
        fields_done = {
            "metrics": {
                **_json(metrics),
                "baselines": _json(baselines),
                "rows": len(data),
                "train_rows": len(train_idx),
                "valid_rows": len(valid_idx),
                "champion_comparison": comparison,
            },
            "params": {**params, "feature_names": list(data.feature_names)},
        }
        scored = challenger_finish(version, elapsed_ms, fields_done, promote=comparison["promote"], now=now)
    if scored is not None:
        champion_install(version, *scored)
    return version


def _summary(metrics: dict) -> dict:
    return {key: metrics[key] for key in ("qini", "auuc", "auuc_random")}


def load_model(version: ModelVersion):
    from mlcore.engine.uplift import UpliftModel

    return UpliftModel.from_bytes(artifact_load(version))


def uplift_customer_scores(version: ModelVersion, X: np.ndarray) -> np.ndarray:
    """Predicted incremental P(goal) per row of decision features."""
    if not len(X):
        return np.zeros(0, dtype=np.float64)
    return np.asarray(load_model(version).predict(np.asarray(X, dtype=np.float64)), dtype=np.float64)


def _compare(valid_X: np.ndarray, valid_treated: np.ndarray, valid_y: np.ndarray, challenger_qini: float) -> dict:
    from mlcore.engine.uplift import uplift_metrics

    champion = registry.champion(ModelVersion.Task.UPLIFT)
    if champion is None:
        return {"champion_id": None, "promote": True, "reason": "no champion yet"}
    answer = {"champion_id": champion.pk, "challenger_qini": challenger_qini}
    try:
        champion_qini = uplift_metrics(uplift_customer_scores(champion, valid_X), valid_treated, valid_y)["qini"]
    except (ArtifactError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        return {**answer, "champion_qini": None, "promote": True, "reason": f"the champion cannot be scored: {exc}"}
    promote = challenger_qini > champion_qini
    reason = (
        "higher validation Qini than the champion"
        if promote
        else "validation Qini not higher than the champion's (a tie keeps the champion)"
    )
    return {**answer, "champion_qini": champion_qini, "promote": bool(promote), "reason": reason}
