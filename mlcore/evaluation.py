"""Off-policy evaluation of creative policies on a campaign's logged sends: "what would this
policy have earned on the last N days of sends?", before it goes live.

The logs (touchpoints only, as everything mlcore learns from):
- rows: the campaign's `sent` touchpoints of the last `days` days whose outcome window has
  closed by `now` (sends still inside their window have no known reward yet: they are
  counted as `pending` and left out);
- action: the creative sent; the arms are the creatives of the logs, and a send can only
  have had a creative of its own channel kind (the touchpoint's `channel`);
- reward: 1 when the send converted, by the per-send exposure -> outcome join
  (marketing.outcomes.send_outcomes_sql: a goal-kind touchpoint within the window);
- logged probability of the creative: what the creative policy logged in the features
  (`features.creative.probability`, the learning policies do); else the message's
  probability divided by the channel's logged probability; else the message's probability
  when the channel policy was fixed (probability 1). A send without any of them makes the
  evaluation refuse with a clear error: a guessed propensity would silently bias it.

Target policies (`policy` JSON):
- {"type": "uniform"}: uniform over the creatives of the send's channel kind;
- {"type": "fixed", "creative": id}: always that creative (evaluated on the sends of its
  channel kind only);
- {"type": "thompson", "prior": [a, b], "draws": n}: the current posterior's P(argmax),
  what the Thompson creative policy would pick with now (mlcore.rewards);
- {"type": "greedy"}: always the creative with the best observed conversion rate in the
  evaluated sends (ties shared).

Reward model for the direct method and doubly robust: the per-creative mean reward of the
evaluated sends (then the direct method's interval also carries those means' binomial
error), or the champion propensity model (mlcore.propensity) where one exists
("reward_model": "auto" picks it when available).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection
from django.utils import timezone

from marketing.errors import BatchInvalid, RowError
from marketing.models import Touchpoint
from marketing.outcomes import send_outcomes_sql
from mlcore.engine import ope
from mlcore.engine.bandits import argmax_probabilities, beta_posterior
from mlcore.rewards import CREATIVE, arm_rewards
from mlcore.training import campaign_goals

TARGETS = ("uniform", "fixed", "thompson", "greedy")
REWARD_MODELS = ("auto", "arm_mean", "propensity")
MAX_DAYS = 365
DEFAULT_DRAWS = 10_000
CONFIDENCE = 0.95
_Z = 1.959963984540054
ESTIMATES = (("ips", "ips"), ("snips", "snips"), ("dm", "direct_method"), ("dr", "doubly_robust"))


class EvaluationError(BatchInvalid):
    """A request that cannot be evaluated, naming the field and why (a 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__([RowError(row=None, field=field, message=message)])


# --- the request -----------------------------------------------------------------------------


def _positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < float("inf")


def target_policy_errors(policy: Any) -> list[str]:
    """Problems of a target policy JSON (module docstring); empty when well-formed."""
    if not isinstance(policy, Mapping):
        return ['must be a JSON object such as {"type": "uniform"}']
    kind = policy.get("type")
    if kind not in TARGETS:
        return [f'"type" must be one of {", ".join(TARGETS)}']
    allowed = {"uniform": {"type"}, "fixed": {"type", "creative"}, "thompson": {"type", "prior", "draws"}}.get(
        kind, {"type"}
    )
    errors = [f'unknown key "{key}" for a {kind} policy' for key in policy if key not in allowed]
    if kind == "fixed":
        creative = policy.get("creative")
        if isinstance(creative, bool) or not isinstance(creative, int) or creative < 1:
            errors.append('"creative" must be a creative id')
    if kind == "thompson":
        prior = policy.get("prior", [1, 1])
        if not isinstance(prior, list | tuple) or len(prior) != 2 or not all(_positive_number(v) for v in prior):
            errors.append('"prior" must be two positive numbers [alpha, beta]')
        draws = policy.get("draws", DEFAULT_DRAWS)
        if isinstance(draws, bool) or not isinstance(draws, int) or not 100 <= draws <= 1_000_000:
            errors.append('"draws" must be a whole number from 100 to 1000000')
    return errors


# --- the logs --------------------------------------------------------------------------------


def _json(path: tuple[str, ...], *, number: bool) -> str:
    """A value at `path` of the touchpoint p's properties: a float (number=True, NULL when
    absent or not a number) or text."""
    if connection.vendor == "postgresql":
        pointer = "{" + ",".join(path) + "}"
        if number:
            return (
                f"CASE WHEN jsonb_typeof(p.properties #> '{pointer}') = 'number' "
                f"THEN (p.properties #>> '{pointer}')::float8 END"
            )
        return f"COALESCE(p.properties #>> '{pointer}', '')"
    json_path = "$." + ".".join(path)
    if number:
        return (
            f"CASE WHEN json_type(p.properties, '{json_path}') IN ('integer', 'real') "
            f"THEN json_extract(p.properties, '{json_path}') END"
        )
    return f"COALESCE(json_extract(p.properties, '{json_path}'), '')"


def _logged_rows(
    campaign_id: int, goal: str, window: int, since: datetime, until: datetime, *, per_send: bool
) -> list[tuple]:
    """(touchpoint id, channel kind, creative id, converted, probability, policy, creative
    probability, channel probability, count) of the sends in [since, until). Without
    `per_send`, identical sends are one row with their count and no id (a campaign's sends
    take a few distinct values: a million sends come back as a handful of rows, expanded in
    numpy); per send (count 1, by id) when a reward model needs each one's features."""
    sends_sql, params = send_outcomes_sql([campaign_id], goal_kind=goal, window_days=window, since=since, until=until)
    table = connection.ops.quote_name(Touchpoint._meta.db_table)
    values = f"""s.channel, s.creative_id, s.converted,
               {_json(("probability",), number=True)}, {_json(("policy",), number=False)},
               {_json(("features", "creative", "probability"), number=True)},
               {_json(("features", "channel", "probability"), number=True)}"""
    if per_send:
        select, tail = f"s.id, {values}, 1", "ORDER BY s.id"
    else:
        select, tail = f"NULL, {values}, COUNT(*)", "GROUP BY 2, 3, 4, 5, 6, 7, 8 ORDER BY 3, 2, 4, 5, 6, 7, 8"
    sql = f"WITH s AS ({sends_sql}) SELECT {select} FROM s JOIN {table} p ON p.id = s.id WHERE s.kind = 'sent' {tail}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _pending(campaign_id: int, since: datetime, until: datetime) -> int:
    """Sends of [since, until) (their window is still open)."""
    if until <= since:
        return 0
    return Touchpoint.objects.filter(
        campaign_id=campaign_id, kind="sent", occurred_at__gte=since, occurred_at__lt=until
    ).count()


def logged_creative_probability(
    probability: np.ndarray, policy: np.ndarray, creative_p: np.ndarray, channel_p: np.ndarray
) -> np.ndarray:
    """The probability the creative policy gave each logged creative (module docstring);
    NaN where the logs cannot tell."""
    channel_fixed = np.array([str(label).startswith("fixed/") for label in policy.tolist()], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        from_channel = probability / channel_p
    return np.where(
        ~np.isnan(creative_p),
        creative_p,
        np.where(~np.isnan(channel_p), from_channel, np.where(channel_fixed, probability, np.nan)),
    )


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


# --- targets ---------------------------------------------------------------------------------


def _target_probs(
    policy: Mapping[str, Any],
    campaign_id: int,
    arms: np.ndarray,
    arm_kinds: np.ndarray,
    row_kind: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    goal: str,
    window: int,
    now: datetime,
) -> tuple[np.ndarray, np.ndarray]:
    """(target probabilities (n, k), which rows the policy applies to (n,) bool)."""
    n, k = len(row_kind), len(arms)
    mask = arm_kinds[None, :] == row_kind[:, None]
    kind = policy["type"]
    applies = np.ones(n, dtype=bool)
    if kind == "uniform":
        return mask / mask.sum(axis=1, keepdims=True), applies
    if kind == "fixed":
        creative = int(policy["creative"])
        column = np.flatnonzero(arms == creative)
        if not len(column):
            raise EvaluationError(
                "policy.creative",
                f"creative {creative} was not sent in the evaluated period: there is no logged data to evaluate it on",
            )
        target = np.zeros((n, k))
        target[:, column[0]] = 1.0
        return target, row_kind == arm_kinds[column[0]]
    per_kind: dict[str, np.ndarray] = {}
    if kind == "thompson":
        rewards_now = arm_rewards(campaign_id, arm=CREATIVE, goal_kind=goal, window_days=window, now=now)
        prior = tuple(float(v) for v in policy.get("prior", (1, 1)))
        draws = int(policy.get("draws", DEFAULT_DRAWS))
        for channel_kind in np.unique(arm_kinds).tolist():
            columns = np.flatnonzero(arm_kinds == channel_kind)
            successes, trials = rewards_now.matrices(arms[columns].tolist())
            alpha, beta = beta_posterior(successes[0], trials[0], prior)
            row = np.zeros(k)
            row[columns] = argmax_probabilities(alpha, beta, draws=draws, seed=0)
            per_kind[channel_kind] = row
    else:  # greedy on the observed rates
        sums = np.bincount(actions, weights=rewards, minlength=k)
        counts = np.bincount(actions, minlength=k)
        rates = sums / np.maximum(counts, 1)
        for channel_kind in np.unique(arm_kinds).tolist():
            columns = np.flatnonzero(arm_kinds == channel_kind)
            best = columns[rates[columns] == rates[columns].max()]
            row = np.zeros(k)
            row[best] = 1.0 / len(best)
            per_kind[channel_kind] = row
    target = np.zeros((n, k))
    for channel_kind, row in per_kind.items():
        target[row_kind == channel_kind] = row
    return target, applies


def _arm_mean_predictions(actions: np.ndarray, rewards: np.ndarray, n: int, k: int) -> np.ndarray:
    sums = np.bincount(actions, weights=rewards, minlength=k)
    counts = np.bincount(actions, minlength=k)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return np.broadcast_to(means, (n, k)).copy()


def _usable_champion():
    """The champion propensity version when it can score today's features, else None."""
    from mlcore import registry
    from mlcore.models import ModelVersion
    from mlcore.training import FEATURE_NAMES

    champion = registry.champion(ModelVersion.Task.PROPENSITY)
    if champion is None or list(champion.params.get("feature_names", [])) != list(FEATURE_NAMES):
        return None
    return champion


def _propensity_predictions(
    campaign_id: int, days: int, now: datetime, touchpoint_ids: np.ndarray, row_kind: np.ndarray, arms: np.ndarray
) -> np.ndarray | None:
    """The champion propensity model's P(goal) for every (send, creative) from the features
    the send saw (mlcore.training: logged at decision time where the policy logged them,
    else computed from the touchpoints before the send); None without a usable champion."""
    from mlcore.propensity import load_model, propensity_predict
    from mlcore.training import training_set

    champion = _usable_champion()
    if champion is None:
        return None
    rows = training_set(days=days, now=now, campaign_ids=[campaign_id], include_held_out=False)
    order = np.argsort(rows.touchpoint_id)
    positions = order[np.searchsorted(rows.touchpoint_id[order], touchpoint_ids)] if len(rows) else None
    if positions is None or not np.array_equal(rows.touchpoint_id[positions], touchpoint_ids):
        return None  # the training rows do not cover these sends (another goal or window)
    X = rows.X[positions]
    model = load_model(champion)
    n = len(touchpoint_ids)
    return np.column_stack(
        [propensity_predict(champion, X, row_kind, np.full(n, int(arm)), model=model) for arm in arms.tolist()]
    )


def _arm_mean_dm(estimate: dict, target: np.ndarray, actions: np.ndarray, rewards: np.ndarray, k: int) -> dict:
    """The direct method's interval widened by the per-creative means' binomial error:
    se^2 = se_sends^2 + sum_j mean(pi_j)^2 * r_j (1 - r_j) / n_j."""
    counts = np.bincount(actions, minlength=k).astype(np.float64)
    means = np.bincount(actions, weights=rewards, minlength=k) / np.maximum(counts, 1)
    share = target.mean(axis=0)
    model_variance = float(np.sum(np.where(counts > 0, share**2 * means * (1 - means) / np.maximum(counts, 1), 0.0)))
    std_error = float(np.sqrt(estimate["std_error"] ** 2 + model_variance))
    return {**estimate, **_interval(estimate["value"], std_error), "std_error": std_error}


# --- the service -----------------------------------------------------------------------------


def _interval(value: float, std_error: float) -> dict:
    return {"value": value, "ci_low": value - _Z * std_error, "ci_high": value + _Z * std_error}


def policy_evaluate(
    campaign_id: int,
    policy: Mapping[str, Any],
    *,
    days: int = 30,
    now: datetime | None = None,
    reward_model: str = "auto",
    clip: float | None = None,
) -> dict:
    """Estimates of what `policy` would have earned (conversion rate per send) on the
    campaign's sends of the last `days` days (module docstring): {"campaign", "days",
    "since", "until", "goal_event", "window_days", "policy", "n", "pending", "arms",
    "logged", "reward_model", "estimates": {"ips"|"snips"|"dm"|"dr": {"value", "ci_low",
    "ci_high", "std_error", "ess"}}}. Raises EvaluationError (a 400 naming the field)."""
    errors = target_policy_errors(policy)
    if errors:
        raise BatchInvalid([RowError(row=None, field="policy", message=message) for message in errors])
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise EvaluationError("days", f"must be a whole number from 1 to {MAX_DAYS}")
    if reward_model not in REWARD_MODELS:
        raise EvaluationError("reward_model", f"must be one of {', '.join(REWARD_MODELS)}")
    now = now or timezone.now()
    goal, window = campaign_goals([campaign_id])[campaign_id]
    since = now - timedelta(days=days)
    until = max(now - timedelta(days=window), since)
    use_model = reward_model == "propensity" or (reward_model == "auto" and _usable_champion() is not None)
    rows = _logged_rows(campaign_id, goal, window, since, until, per_send=use_model)
    pending = _pending(campaign_id, until, now)
    if not rows:
        more = f" ({pending} sends are still inside their {window}-day window)" if pending else ""
        raise EvaluationError(
            "campaign",
            f"campaign {campaign_id} has no sends in the last {days} days whose outcome is known{more}: "
            "nothing to evaluate on",
        )
    ids, kinds, creatives, converted, probability, labels, creative_p, channel_p, counts = (
        list(column) for column in zip(*rows, strict=True)
    )
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if any(creative is None for creative in creatives):
        raise EvaluationError("campaign", "some sends carry no creative id: they cannot be evaluated")
    logged_p = logged_creative_probability(
        _floats(probability), np.asarray(labels, dtype=object), _floats(creative_p), _floats(channel_p)
    )
    bad = np.isnan(logged_p) | (logged_p <= 0) | (logged_p > 1)
    if bad.any():
        raise EvaluationError(
            "campaign",
            f"{int(counts[bad].sum())} of {total} sends have no logged probability for their creative "
            "(a creative policy that logs none, under a random channel policy): they cannot be reweighted",
        )
    # One entry per send from here on (np.repeat of the distinct rows).
    row_kind = np.repeat(np.asarray([str(kind) for kind in kinds], dtype=object), counts)
    creative_ids = np.repeat(np.asarray(creatives, dtype=np.int64), counts)
    logged_p = np.repeat(logged_p, counts)
    rewards = np.repeat(np.asarray(converted, dtype=np.float64), counts)
    arms, actions = np.unique(creative_ids, return_inverse=True)
    actions = actions.reshape(-1).astype(np.int64)
    arm_kinds = np.empty(len(arms), dtype=object)
    arm_kinds[actions] = row_kind

    target, applies = _target_probs(policy, campaign_id, arms, arm_kinds, row_kind, actions, rewards, goal, window, now)
    if np.count_nonzero(applies) < 2:
        raise EvaluationError("policy", "the policy applies to fewer than 2 of the evaluated sends")
    keep = np.flatnonzero(applies)
    target, actions_kept, rewards_kept, logged_kept = target[keep], actions[keep], rewards[keep], logged_p[keep]
    n, k = len(keep), len(arms)

    predictions, model_used = None, "arm_mean"
    if use_model:
        predictions = _propensity_predictions(
            campaign_id, days, now, np.asarray(ids, dtype=np.int64)[keep], row_kind[keep], arms
        )
        if predictions is None and reward_model == "propensity":
            raise EvaluationError("reward_model", "there is no champion propensity model: train one, or use arm_mean")
        if predictions is not None:
            model_used = "propensity"
    if predictions is None:
        predictions = _arm_mean_predictions(actions_kept, rewards_kept, n, k)

    try:
        results = ope.evaluate_all(
            rewards_kept, actions_kept, logged_kept, target, predictions, clip=clip, confidence=CONFIDENCE
        )
    except ValueError as exc:
        raise EvaluationError("policy", str(exc)) from None
    estimates = {
        key: {
            "value": results[name].value,
            "ci_low": results[name].ci_low,
            "ci_high": results[name].ci_high,
            "std_error": results[name].std_error,
            "ess": results[name].ess,
        }
        for key, name in ESTIMATES
    }
    if model_used == "arm_mean":
        # The engine's direct-method interval covers the spread over sends only; with
        # per-creative means as the model, their own sampling error is known and often the
        # larger part (a policy that always picks one creative has no spread at all).
        estimates["dm"] = _arm_mean_dm(estimates["dm"], target, actions_kept, rewards_kept, k)
    observed = float(rewards_kept.mean())
    std_error = float(np.std(rewards_kept, ddof=1) / np.sqrt(n))
    sends = np.bincount(actions_kept, minlength=k)
    conversions = np.bincount(actions_kept, weights=rewards_kept, minlength=k)
    return {
        "campaign": campaign_id,
        "days": days,
        "since": since,
        "until": until,
        "goal_event": goal,
        "window_days": window,
        "policy": dict(policy),
        "n": n,
        "pending": pending,
        "arms": [
            {
                "creative": int(arms[j]),
                "channel_kind": str(arm_kinds[j]),
                "sends": int(sends[j]),
                "conversions": int(conversions[j]),
                "rate": float(conversions[j] / sends[j]) if sends[j] else None,
                "target_share": float(target[:, j].mean()),
            }
            for j in range(k)
        ],
        "logged": {**_interval(observed, std_error), "std_error": std_error, "n": n},
        "reward_model": model_used,
        "estimates": estimates,
    }
