"""Learning policies for campaign launches: Thompson sampling over creatives and over
channels (per segment), and a contextual policy on the champion propensity model.

Registered with campaigns.delivery.policies.register_policy from CampaignsConfig.ready:

- creative `{"type": "thompson", "prior": [1, 1], "draws": 10000}`: a Beta-Bernoulli
  posterior per enabled creative of the channel's kind, from the campaign's own sends and
  their outcomes (mlcore.rewards: delayed rewards, an open window without a conversion is
  no failure yet);
- channel `{"type": "thompson", "channels": [ids], "per_segment": [segment ids]}`: the same
  over channels, with one posterior per listed segment (by the customers' current
  membership; a customer in several gets the first listed) and the campaign-wide
  posterior for everyone else; the argmax is taken over the channels each customer can be
  reached on;
- creative or channel `{"type": "propensity", "epsilon": 0.1}`: the champion propensity
  model scores every arm for every customer from the features at launch time
  (mlcore.training.decision_features), then epsilon-greedy.

Every pick logs the probability the policy gave it: for Thompson sampling P(arm is the
argmax of the posterior), estimated by Monte Carlo once per batch and (segment, eligibility
pattern), from which the pick is drawn by inverse CDF on the customer's deterministic
uniform (mlcore.engine.bandits) — so the logged number is exactly the probability of what
was done. The features log the posterior (alpha, beta per arm) or the model inputs.

All picking is vectorised over the audience: Python loops run over channel kinds, segments
and distinct feature groups, never over customers (a million Thompson picks take about
0.3 s on one core, feature groups included). The one exception is what the propensity
policies log: each customer's own feature values, one small dict each, which the launch
writes per message anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone

from campaigns.delivery.policies import (
    CHANNEL,
    CREATIVE,
    ChannelPolicy,
    CreativePolicy,
    GroupedFeatures,
    Picks,
    PolicyError,
    _id,
    _unknown_keys,
    register_policy,
)
from campaigns.models import Campaign, Segment, SegmentMembership
from mlcore.engine.bandits import argmax_probabilities, beta_posterior, epsilon_greedy, thompson_pick
from mlcore.rewards import ArmRewards, arm_rewards
from mlcore.training import register_campaign_goals

DEFAULT_DRAWS = 10_000
MAX_DRAWS = 1_000_000
DEFAULT_EPSILON = 0.1


# --- shared checks ---------------------------------------------------------------------------


def _prior_errors(config: Mapping[str, Any]) -> list[str]:
    prior = config.get("prior")
    if prior is None:
        return []
    if (
        not isinstance(prior, list | tuple)
        or len(prior) != 2
        or any(isinstance(value, bool) or not isinstance(value, int | float) for value in prior)
        or not all(0 < value < float("inf") for value in prior)
    ):
        return ['"prior" must be two positive numbers [alpha, beta], e.g. [1, 1]']
    return []


def _draws_errors(config: Mapping[str, Any]) -> list[str]:
    draws = config.get("draws")
    if draws is None:
        return []
    if isinstance(draws, bool) or not isinstance(draws, int) or not 100 <= draws <= MAX_DRAWS:
        return [f'"draws" must be a whole number from 100 to {MAX_DRAWS}']
    return []


def _epsilon_errors(config: Mapping[str, Any]) -> list[str]:
    epsilon = config.get("epsilon", DEFAULT_EPSILON)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 <= epsilon <= 1:
        return ['"epsilon" must be a number from 0 to 1 (the share of random picks)']
    return []


def _id_list_errors(config: Mapping[str, Any], key: str, what: str, *, required: bool) -> list[str]:
    values = config.get(key)
    if values is None:
        return [f'"{key}" is required: a list of {what} ids'] if required else []
    if not isinstance(values, list) or (required and not values):
        return [
            f'"{key}" must be a non-empty list of {what} ids' if required else f'"{key}" must be a list of {what} ids'
        ]
    bad = [value for value in values if _id(value) is None]
    if bad:
        return [f'"{key}": {bad[0]!r} is not a {what} id']
    ids = [_id(value) for value in values]
    if len(set(ids)) != len(ids):
        return [f'"{key}" lists a {what} twice']
    return []


class _ListedChannels:
    """Channel policies choosing among the config's "channels": those that exist and are
    enabled; a listed channel that does not exist, or none enabled, is an error."""

    config: dict
    context: Any

    def _listed(self) -> list[int]:
        return [_id(value) for value in self.config["channels"]]

    def channel_ids(self) -> list[int]:
        return sorted(
            channel_id
            for channel_id in self._listed()
            if (option := self.context.channel(channel_id)) is not None and option.enabled
        )

    def _listed_channel_errors(self) -> list[str]:
        missing = [channel_id for channel_id in self._listed() if self.context.channel(channel_id) is None]
        errors = [f"channel {channel_id} does not exist" for channel_id in missing]
        if not missing and not self.channel_ids():
            errors.append("every listed channel is disabled")
        return errors


class _CreativesOfKind:
    """Creative policies choosing, per channel kind, among the campaign's enabled creatives
    of that kind."""

    context: Any

    def _arms(self, kind: str) -> list[int]:
        return sorted(option.id for option in self.context.creatives if option.enabled and option.channel_kind == kind)

    def channel_kind_errors(self, kinds: Sequence[str]) -> list[str]:
        return [f"no enabled {kind} creative to choose from" for kind in sorted(set(kinds)) if not self._arms(kind)]


class _Posterior:
    """What a Thompson policy needs from its config and campaign."""

    config: dict
    context: Any

    def _prior(self) -> tuple[float, float]:
        a, b = self.config.get("prior") or (1, 1)
        return float(a), float(b)

    def _draws(self) -> int:
        return int(self.config.get("draws") or DEFAULT_DRAWS)

    def _now(self):
        return self.context.now or timezone.now()

    def _goal(self) -> tuple[str, int]:
        row = (
            Campaign.objects.filter(pk=self.context.campaign_id)
            .values_list("goal_event", "attribution_window_days")
            .first()
        )
        if row is None:
            raise PolicyError(f"campaign {self.context.campaign_id} does not exist")
        return row[0], int(row[1])


def _grouped(keys: np.ndarray, describe) -> GroupedFeatures:
    """One feature dict per distinct row of `keys` (n, m) small non-negative int64, built by
    describe(row of keys, first customer's position). Hash-based (pandas.factorize on one
    mixed-radix int64 per row): a million customers in tens of milliseconds, where a sort
    of the rows took seconds."""
    n = len(keys)
    if n == 0:
        return GroupedFeatures(values=[], index=np.zeros(0, dtype=np.int64))
    combined = np.zeros(n, dtype=np.int64)
    for column in keys.T:
        combined = combined * (int(column.max()) + 1) + column
    codes, _ = pd.factorize(combined)
    # Codes number the distinct rows in order of first appearance: the running maximum
    # steps up exactly at each first appearance.
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    values = [describe(keys[position].tolist(), int(position)) for position in first.tolist()]
    return GroupedFeatures(values=values, index=codes.astype(np.int64))


def _kinds(channel_kinds: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(code per customer, the distinct kinds) of an object array of channel kinds, hashed."""
    codes, kinds = pd.factorize(np.asarray(channel_kinds, dtype=object))
    return codes.astype(np.int64), [str(kind) for kind in kinds]


def _floats(values: np.ndarray) -> list[float]:
    return [round(float(value), 6) for value in values]


# --- Thompson sampling over creatives ----------------------------------------------------------


class ThompsonCreativePolicy(_CreativesOfKind, _Posterior, CreativePolicy):
    """{"type": "thompson", "prior": [a, b], "draws": n}: see the module docstring."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return _unknown_keys(config, {"type", "prior", "draws"}) + _prior_errors(config) + _draws_errors(config)

    def rewards(self) -> ArmRewards:
        goal, window = self._goal()
        return arm_rewards(self.context.campaign_id, arm=CREATIVE, goal_kind=goal, window_days=window, now=self._now())

    def posterior(self, kind: str, rewards: ArmRewards | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(creative ids, alpha (k,), beta (k,)) of the enabled creatives of `kind` now."""
        arms = self._arms(kind)
        successes, trials = (rewards or self.rewards()).matrices(arms)
        alpha, beta = beta_posterior(successes[0], trials[0], self._prior())
        return arms, alpha, beta

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, channel_kinds: np.ndarray) -> Picks:
        n = len(customer_ids)
        choice = np.zeros(n, dtype=np.int64)
        probability = np.zeros(n, dtype=np.float64)
        keys = np.zeros((n, 2), dtype=np.int64)  # (kind number, chosen column)
        uniforms = self.context.uniform(customer_ids, CREATIVE)
        seed = self.context.seed("thompson-creative")
        described: dict[int, tuple] = {}
        rewards = self.rewards() if n else None
        codes, kinds = _kinds(channel_kinds)
        for number, kind in enumerate(kinds):
            rows = np.flatnonzero(codes == number)
            arms, alpha, beta = self.posterior(kind, rewards)
            if not arms:
                raise PolicyError(f"no enabled {kind} creative to choose from")
            columns, chosen = thompson_pick(alpha, beta, uniforms[rows], draws=self._draws(), seed=seed)
            choice[rows] = np.asarray(arms, dtype=np.int64)[columns]
            probability[rows] = chosen
            keys[rows, 0], keys[rows, 1] = number, columns
            table = argmax_probabilities(alpha, beta, draws=self._draws(), seed=seed)  # cached: the pick's own
            described[number] = (arms, alpha, beta, table)

        def describe(key: list[int], _: int) -> dict:
            arms, alpha, beta, table = described[key[0]]
            return {
                "policy": "thompson",
                "arms": arms,
                "alpha": _floats(alpha),
                "beta": _floats(beta),
                "p_argmax": _floats(table),
                "probability": float(table[key[1]]),
            }

        return Picks(choice=choice, probability=probability, features=_grouped(keys, describe))


# --- Thompson sampling over channels ----------------------------------------------------------


class ThompsonChannelPolicy(_ListedChannels, _Posterior, ChannelPolicy):
    """{"type": "thompson", "channels": [ids], "per_segment": [segment ids], "prior", "draws"}."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return (
            _unknown_keys(config, {"type", "channels", "per_segment", "prior", "draws"})
            + _id_list_errors(config, "channels", "channel", required=True)
            + _id_list_errors(config, "per_segment", "segment", required=False)
            + _prior_errors(config)
            + _draws_errors(config)
        )

    def _segments(self) -> list[int]:
        return [_id(value) for value in self.config.get("per_segment") or []]

    def context_errors(self) -> list[str]:
        errors = self._listed_channel_errors()
        segments = self._segments()
        if segments:
            known = set(Segment.objects.filter(pk__in=segments).values_list("pk", flat=True))
            errors += [f"segment {segment_id} does not exist" for segment_id in segments if segment_id not in known]
        return errors

    def _groups_sql(self) -> tuple[str, list] | None:
        segments = self._segments()
        if not segments:
            return None
        table = SegmentMembership._meta.db_table
        placeholders = ", ".join(["%s"] * len(segments))
        return f"SELECT customer_id, segment_id AS grp FROM {table} WHERE segment_id IN ({placeholders})", segments

    def posterior(self, channel_ids: Sequence[int]) -> tuple[list[int | None], np.ndarray, np.ndarray]:
        """(groups: None then the listed segments, alpha (g, k), beta (g, k)) over channel_ids."""
        goal, window = self._goal()
        rewards = arm_rewards(
            self.context.campaign_id,
            arm=CHANNEL,
            goal_kind=goal,
            window_days=window,
            now=self._now(),
            groups=self._groups_sql(),
        )
        groups: list[int | None] = [None, *self._segments()]
        successes, trials = rewards.matrices([int(c) for c in channel_ids], groups)
        alpha, beta = beta_posterior(successes, trials, self._prior())
        return groups, alpha, beta

    def _customer_groups(self, customer_ids: np.ndarray) -> np.ndarray:
        """Each customer's posterior row: the first listed segment they are in (1..), else 0."""
        group = np.zeros(len(customer_ids), dtype=np.int64)
        segments = self._segments()
        if not segments:
            return group
        pairs = np.array(
            SegmentMembership.objects.filter(segment_id__in=segments).values_list("customer_id", "segment_id"),
            dtype=np.int64,
        ).reshape(-1, 2)
        # Last listed first, so an earlier-listed segment overwrites a later one.
        for position in range(len(segments), 0, -1):
            members = pairs[pairs[:, 1] == segments[position - 1], 0]
            group[np.isin(customer_ids, members)] = position
        return group

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, eligible: np.ndarray) -> Picks:
        groups, alpha, beta = self.posterior(channel_ids.tolist())
        group = self._customer_groups(np.asarray(customer_ids, dtype=np.int64))
        seed = self.context.seed("thompson-channel")
        columns, probability = thompson_pick(
            alpha,
            beta,
            self.context.uniform(customer_ids, CHANNEL),
            group=group,
            eligible=eligible,
            draws=self._draws(),
            seed=seed,
        )
        k = len(channel_ids)
        pattern = eligible.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))
        keys = np.stack([group, pattern, columns], axis=1)

        def describe(key: list[int], position: int) -> dict:
            row, bits, _ = key
            return {
                "policy": "thompson",
                "segment": groups[row],
                "arms": [int(c) for c in channel_ids],
                "alpha": _floats(alpha[row]),
                "beta": _floats(beta[row]),
                "eligible_channels": [int(channel_ids[j]) for j in range(k) if bits >> j & 1],
                "probability": float(probability[position]),
            }

        return Picks(
            choice=np.asarray(channel_ids, dtype=np.int64)[columns],
            probability=probability,
            features=_grouped(keys, describe),
        )


# --- the contextual policy: the champion propensity model -------------------------------------


class _Propensity:
    """What both propensity policies share: the champion, the features, the scoring."""

    config: dict
    context: Any

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return _unknown_keys(config, {"type", "epsilon"}) + _epsilon_errors(config)

    def _epsilon(self) -> float:
        return float(self.config.get("epsilon", DEFAULT_EPSILON))

    def _champion(self):
        from mlcore import registry
        from mlcore.models import ModelVersion

        return registry.champion(ModelVersion.Task.PROPENSITY)

    def _champion_errors(self) -> list[str]:
        from mlcore.training import FEATURE_NAMES

        champion = self._champion()
        if champion is None:
            return ["there is no champion propensity model yet: train one (model versions), or use another policy"]
        if list(champion.params.get("feature_names", [])) != list(FEATURE_NAMES):
            return [f"the champion propensity model (version {champion.pk}) was trained on other features: retrain it"]
        return []

    def _score(self, customer_ids: np.ndarray, arms: list[list[tuple[str, int]]]) -> tuple[Any, np.ndarray, np.ndarray]:
        """(champion, decision features (n, d), scores (n, len(arms))): each column the mean
        P(goal) over its (channel label, creative id) pairs, from the features at launch."""
        from mlcore.propensity import load_model, propensity_predict
        from mlcore.training import decision_features

        champion = self._champion()
        if champion is None:
            raise PolicyError(self._champion_errors()[0])
        X = decision_features(customer_ids, at=self.context.now or timezone.now())
        model = load_model(champion)
        n = len(customer_ids)
        scores = np.zeros((n, len(arms)), dtype=np.float64)
        for column, pairs in enumerate(arms):
            for label, creative_id in pairs:
                scores[:, column] += propensity_predict(
                    champion, X, np.full(n, label, dtype=object), np.full(n, int(creative_id)), model=model
                )
            scores[:, column] /= max(len(pairs), 1)
        return champion, X, scores

    def _features(self, champion, X: np.ndarray, scores: np.ndarray, probability: np.ndarray, arms) -> GroupedFeatures:
        """One dict per customer: what the model saw (mlcore.training reads "decision" back
        when it trains), its scores per arm and the pick's probability."""
        from mlcore.training import decision_logged

        logged = decision_logged(X)
        values = [
            {
                "policy": "propensity",
                "model_version": champion.pk,
                "epsilon": self._epsilon(),
                "arms": arms,
                "scores": _floats(row),
                "probability": float(p),
                **decision,
            }
            for decision, row, p in zip(logged, scores, probability.tolist(), strict=True)
        ]
        return GroupedFeatures(values=values, index=np.arange(len(values), dtype=np.int64))


class PropensityCreativePolicy(_CreativesOfKind, _Propensity, CreativePolicy):
    """{"type": "propensity", "epsilon": 0.1}: per customer, the enabled creative of the
    channel's kind the champion model scores highest, a random one with probability epsilon."""

    def context_errors(self) -> list[str]:
        return self._champion_errors()

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, channel_kinds: np.ndarray) -> Picks:
        n = len(customer_ids)
        choice = np.zeros(n, dtype=np.int64)
        probability = np.zeros(n, dtype=np.float64)
        values: list[dict] = [{} for _ in range(n)]
        uniforms = self.context.uniform(customer_ids, CREATIVE)
        codes, kinds = _kinds(channel_kinds)
        for number, kind in enumerate(kinds):
            rows = np.flatnonzero(codes == number)
            arms = self._arms(kind)
            if not arms:
                raise PolicyError(f"no enabled {kind} creative to choose from")
            champion, X, scores = self._score(customer_ids[rows], [[(kind, arm)] for arm in arms])
            columns, chosen = epsilon_greedy(scores, self._epsilon(), uniforms[rows])
            choice[rows] = np.asarray(arms, dtype=np.int64)[columns]
            probability[rows] = chosen
            grouped = self._features(champion, X, scores, chosen, arms)
            for row, value in zip(rows.tolist(), grouped.values, strict=True):
                values[row] = value
        return Picks(
            choice=choice,
            probability=probability,
            features=GroupedFeatures(values=values, index=np.arange(n, dtype=np.int64)),
        )


class PropensityChannelPolicy(_ListedChannels, _Propensity, ChannelPolicy):
    """{"type": "propensity", "channels": [ids], "epsilon": 0.1}: per customer, the reachable
    channel the champion model scores highest (a channel's score: the mean over the
    campaign's enabled creatives of its kind), a random reachable one with probability epsilon."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return (
            _unknown_keys(config, {"type", "channels", "epsilon"})
            + _id_list_errors(config, "channels", "channel", required=True)
            + _epsilon_errors(config)
        )

    def context_errors(self) -> list[str]:
        return self._listed_channel_errors() + self._champion_errors()

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, eligible: np.ndarray) -> Picks:
        arms = []
        for channel_id in channel_ids.tolist():
            kind = self.context.channel(int(channel_id)).kind
            creatives = [o.id for o in self.context.creatives if o.enabled and o.channel_kind == kind]
            arms.append([(kind, creative_id) for creative_id in creatives] or [(kind, 0)])
        champion, X, scores = self._score(np.asarray(customer_ids), arms)
        columns, probability = epsilon_greedy(
            scores, self._epsilon(), self.context.uniform(customer_ids, CHANNEL), eligible=eligible
        )
        features = self._features(champion, X, scores, probability, [int(c) for c in channel_ids])
        for value, row in zip(features.values, eligible.tolist(), strict=True):
            value["eligible_channels"] = [int(c) for c, ok in zip(channel_ids.tolist(), row, strict=True) if ok]
        return Picks(
            choice=np.asarray(channel_ids, dtype=np.int64)[columns], probability=probability, features=features
        )


def campaign_goals_lookup(campaign_ids: list[int]) -> dict[int, tuple[str, int]]:
    """(goal event, attribution window days) per campaign id, for mlcore (training and
    policy evaluation read campaigns' goals through this hook: mlcore sits below campaigns)."""
    rows = Campaign.objects.filter(pk__in=list(campaign_ids)).values_list("pk", "goal_event", "attribution_window_days")
    return {pk: (goal, int(window)) for pk, goal, window in rows}


def register_bandit_policies() -> None:
    """Called from CampaignsConfig.ready."""
    register_policy("thompson", ThompsonCreativePolicy)
    register_policy("thompson", ThompsonChannelPolicy)
    register_policy("propensity", PropensityCreativePolicy)
    register_policy("propensity", PropensityChannelPolicy)
    register_campaign_goals(campaign_goals_lookup)
