"""Channel and creative policies: who gets which channel and which creative, picked for a
whole audience at once.

A launch asks the campaign's channel policy to pick a channel for every eligible customer,
then its creative policy to pick a creative of the chosen channel's kind, both vectorised:
numpy arrays in (customer ids, which channels each customer can be reached on), arrays out
(`Picks`: the chosen id per customer, the probability the policy gave that choice, and the
features it used). The probability and features are logged on the message and its
`sent`/`held_out` touchpoint, so mlcore can learn and evaluate policies off-line from the
touchpoint log alone.

A policy is configured by the campaign's JSON (`{"type": "<name>", …}`) and looked up in a
registry by (kind, name): "fixed" and "weighted" live here; the learning issue registers
more (Thompson sampling, model-based) with `register_policy` from its AppConfig.ready().

Random picks are deterministic: a customer's draw is a hash of the run's seed (campaign
salt + run key) and the customer id, so relaunching a run picks the same for everyone
whoever else is in the audience, and two runs of a recurring campaign draw independently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

CHANNEL, CREATIVE = "channel", "creative"
POLICY_KINDS = (CHANNEL, CREATIVE)


# --- what a policy sees ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelOption:
    id: int
    kind: str
    name: str
    cost: Decimal
    enabled: bool


@dataclass(frozen=True)
class CreativeOption:
    id: int
    channel_kind: str
    name: str
    weight: int
    enabled: bool


@dataclass(frozen=True)
class PolicyContext:
    """The campaign and run a policy picks for: every channel of the installation and the
    campaign's creatives (enabled or not: a policy decides what a disabled one means)."""

    campaign_id: int
    run_key: str
    salt: str
    channels: tuple[ChannelOption, ...] = ()
    creatives: tuple[CreativeOption, ...] = ()
    now: datetime | None = None

    def channel(self, channel_id: int) -> ChannelOption | None:
        return next((option for option in self.channels if option.id == channel_id), None)

    def creative(self, creative_id: int) -> CreativeOption | None:
        return next((option for option in self.creatives if option.id == creative_id), None)

    def seed(self, stream: str) -> int:
        """A 64-bit seed for one stream of draws of this run ("channel", "creative", …)."""
        digest = hashlib.sha256(f"{self.salt}|{self.campaign_id}|{self.run_key}|{stream}".encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def uniform(self, customer_ids: np.ndarray, stream: str) -> np.ndarray:
        """One uniform draw in [0, 1) per customer: a function of (seed, customer id) only."""
        return uniform_draws(customer_ids, self.seed(stream))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform_draws(customer_ids: np.ndarray, seed: int) -> np.ndarray:
    """SplitMix64 of (customer id XOR seed), scaled to [0, 1): fast, vectorised and the
    same on every machine (no generator state: a customer's draw does not depend on who
    else is drawn)."""
    x = np.asarray(customer_ids, dtype=np.int64).astype(np.uint64) ^ np.uint64(seed)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --- what a policy answers -------------------------------------------------------------------


@dataclass(frozen=True)
class GroupedFeatures:
    """Per-customer features as a few distinct dicts and each customer's index into them
    (e.g. one per eligibility pattern), so a million customers cost a few JSON dumps."""

    values: Sequence[dict]
    index: np.ndarray


Features = Mapping[str, Any] | Sequence[Mapping[str, Any]] | GroupedFeatures


@dataclass
class Picks:
    """A policy's answer for n customers: `choice` (channel or creative ids, int64),
    `probability` (float64, the probability the policy gave that choice) and `features`
    (one JSON-able dict shared by all, one per customer, or GroupedFeatures)."""

    choice: np.ndarray
    probability: np.ndarray
    features: Features = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.choice = np.asarray(self.choice, dtype=np.int64)
        self.probability = np.asarray(self.probability, dtype=np.float64)


def features_grouped(features: Features, n: int) -> GroupedFeatures:
    """Any form of `Picks.features` as GroupedFeatures over n customers."""
    if isinstance(features, GroupedFeatures):
        return features
    if isinstance(features, Mapping):
        return GroupedFeatures(values=[dict(features)], index=np.zeros(n, dtype=np.int64))
    values = list(features)
    if len(values) != n:
        raise ValueError(f"a policy answered {len(values)} feature dicts for {n} customers")
    return GroupedFeatures(values=values, index=np.arange(n, dtype=np.int64))


# --- the interface ---------------------------------------------------------------------------


class PolicyError(ValueError):
    """A policy that cannot pick for this campaign (e.g. it names a channel that is gone)."""


class Policy:
    """Base of all policies. Subclasses set `kind` ("channel" or "creative") and implement
    `config_errors` (pure JSON checks), `context_errors` (checks against the campaign's
    channels and creatives) and `pick`. The constructor must not raise for a config that
    `config_errors` accepts."""

    kind: ClassVar[str]
    name: ClassVar[str] = ""

    def __init__(self, config: Mapping[str, Any], context: PolicyContext) -> None:
        self.config = dict(config)
        self.context = context

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return []

    def context_errors(self) -> list[str]:
        return []

    @property
    def label(self) -> str:
        """What the message and touchpoint log as the policy (e.g. "weighted")."""
        return self.name


class ChannelPolicy(Policy):
    kind = CHANNEL

    def channel_ids(self) -> list[int]:
        """The channels this policy may pick: the launch checks eligibility for these only."""
        raise NotImplementedError

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, eligible: np.ndarray) -> Picks:
        """customer_ids: (n,) int64; channel_ids: (k,) the columns of `eligible`, in
        `channel_ids()` order; eligible: (n, k) bool, each row with at least one True.
        Must pick an eligible channel for every customer."""
        raise NotImplementedError


class CreativePolicy(Policy):
    kind = CREATIVE

    def channel_kind_errors(self, kinds: Sequence[str]) -> list[str]:
        """Problems picking creatives for customers reached on channels of `kinds`."""
        return []

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, channel_kinds: np.ndarray) -> Picks:
        """channel_ids/channel_kinds: (n,) the channel picked for each customer and its kind.
        Must pick an enabled creative of that kind for every customer."""
        raise NotImplementedError


# --- registry --------------------------------------------------------------------------------

_registry: dict[tuple[str, str], type[Policy]] = {}


def register_policy(name: str, cls: type[Policy]) -> None:
    """Make `{"type": name}` select `cls` for policies of `cls.kind` ("channel" or
    "creative"). Registering a name again replaces the class (a newer version)."""
    if getattr(cls, "kind", None) not in POLICY_KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(POLICY_KINDS)}")
    cls.name = name
    _registry[(cls.kind, name)] = cls


def policy_names(kind: str) -> list[str]:
    return sorted(name for policy_kind, name in _registry if policy_kind == kind)


def policy_errors(policy_json: Any, kind: str) -> list[str]:
    """Problems of a campaign's channel_policy (kind "channel") or creative_policy (kind
    "creative") JSON, as clear messages; empty when it is well-formed. An empty object is
    the default policy (see `policies_for`)."""
    if kind not in POLICY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(POLICY_KINDS)}")
    if policy_json is None or policy_json == {}:
        return []
    if not isinstance(policy_json, Mapping):
        return ['must be a JSON object such as {"type": "fixed", …}, or {} for the default']
    name = policy_json.get("type")
    if not isinstance(name, str) or not name:
        return [f'"type" is required: one of {", ".join(policy_names(kind))}']
    cls = _registry.get((kind, name))
    if cls is None:
        return [f'unknown {kind} policy type "{name}": one of {", ".join(policy_names(kind))}']
    return cls.config_errors(policy_json)


def _id(value: Any) -> int | None:
    """A channel or creative id as the JSON may carry it (1 or "1"); None when not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value) or None
    return None


def _weights_errors(weights: Any, what: str, *, required: bool) -> list[str]:
    if weights is None:
        return [f'"weights" is required: {{"<{what} id>": weight, …}}'] if required else []
    if not isinstance(weights, Mapping) or not weights:
        return [f'"weights" must be a non-empty object {{"<{what} id>": weight, …}}']
    errors = []
    for key, weight in weights.items():
        if _id(key) is None:
            errors.append(f'"weights": "{key}" is not a {what} id')
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            errors.append(f'"weights": the weight of {what} {key} must be a number >= 0')
        elif weight == float("inf"):
            errors.append(f'"weights": the weight of {what} {key} must be finite')
    if not errors and not any(weight > 0 for weight in weights.values()):
        errors.append('"weights": at least one weight must be above 0')
    return errors


def _unknown_keys(config: Mapping[str, Any], allowed: set[str]) -> list[str]:
    return [f'unknown key "{key}" (allowed: {", ".join(sorted(allowed))})' for key in config if key not in allowed]


# --- fixed and weighted ----------------------------------------------------------------------


class FixedChannelPolicy(ChannelPolicy):
    """{"type": "fixed", "channel": <id>}: everyone on that channel (probability 1)."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        errors = _unknown_keys(config, {"type", "channel"})
        if _id(config.get("channel")) is None:
            errors.append('"channel" must be a channel id')
        return errors

    def channel_ids(self) -> list[int]:
        return [_id(self.config["channel"])]

    def context_errors(self) -> list[str]:
        channel_id = _id(self.config["channel"])
        option = self.context.channel(channel_id)
        if option is None:
            return [f"channel {channel_id} does not exist"]
        if not option.enabled:
            return [f"channel {channel_id} ({option.name}) is disabled"]
        return []

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, eligible: np.ndarray) -> Picks:
        n = len(customer_ids)
        return Picks(choice=np.full(n, channel_ids[0]), probability=np.ones(n), features={})


class WeightedChannelPolicy(ChannelPolicy):
    """{"type": "weighted", "weights": {"<channel id>": w, …}}: a random channel per
    customer with probability proportional to its weight, renormalised over the channels
    the customer can be reached on. Disabled channels are left out (renormalised away)."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return _unknown_keys(config, {"type", "weights"}) + _weights_errors(
            config.get("weights"), "channel", required=True
        )

    def _weights(self) -> dict[int, float]:
        return {_id(key): float(weight) for key, weight in self.config["weights"].items() if weight > 0}

    def channel_ids(self) -> list[int]:
        return [
            channel_id
            for channel_id in sorted(self._weights())
            if (option := self.context.channel(channel_id)) is not None and option.enabled
        ]

    def context_errors(self) -> list[str]:
        missing = [channel_id for channel_id in sorted(self._weights()) if self.context.channel(channel_id) is None]
        errors = [f"channel {channel_id} does not exist" for channel_id in missing]
        if not missing and not self.channel_ids():
            errors.append("every channel with a weight above 0 is disabled")
        return errors

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, eligible: np.ndarray) -> Picks:
        weights = self._weights()
        base = np.array([weights[int(channel_id)] for channel_id in channel_ids], dtype=np.float64)
        matrix = eligible * base[None, :]
        columns = _weighted_choice(matrix, self.context.uniform(customer_ids, CHANNEL))
        rows = np.arange(len(customer_ids))
        probability = matrix[rows, columns] / matrix.sum(axis=1)
        # The features are the set of channels the draw was renormalised over: one dict per
        # eligibility pattern (at most 2^k of them).
        bits = eligible.astype(np.int64) @ (1 << np.arange(len(channel_ids), dtype=np.int64))
        patterns, index = np.unique(bits, return_inverse=True)
        values = [
            {"eligible_channels": [int(channel_ids[j]) for j in range(len(channel_ids)) if pattern >> j & 1]}
            for pattern in patterns.tolist()
        ]
        return Picks(
            choice=np.asarray(channel_ids)[columns],
            probability=probability,
            features=GroupedFeatures(values=values, index=index.reshape(-1)),
        )


def _weighted_choice(matrix: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per row of non-negative weights (each row with a positive sum), the column whose
    cumulative-weight interval holds draw x row total: a column of weight 0 is never picked."""
    cumulative = np.cumsum(matrix, axis=1)
    totals = cumulative[:, -1]
    # Strictly below the total, so rounding can never step past the last positive column.
    targets = np.minimum(draws * totals, np.nextafter(totals, 0))
    return np.argmax(cumulative > targets[:, None], axis=1)


class FixedCreativePolicy(CreativePolicy):
    """{"type": "fixed", "creative": <id>}: everyone gets that creative (probability 1);
    every channel the channel policy can pick must be of its kind."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        errors = _unknown_keys(config, {"type", "creative"})
        if _id(config.get("creative")) is None:
            errors.append('"creative" must be a creative id')
        return errors

    def context_errors(self) -> list[str]:
        creative_id = _id(self.config["creative"])
        option = self.context.creative(creative_id)
        if option is None:
            return [f"creative {creative_id} is not a creative of this campaign"]
        if not option.enabled:
            return [f"creative {creative_id} ({option.name}) is disabled"]
        return []

    def channel_kind_errors(self, kinds: Sequence[str]) -> list[str]:
        option = self.context.creative(_id(self.config["creative"]))
        if option is None:
            return []
        others = sorted(set(kinds) - {option.channel_kind})
        if others:
            return [
                f"creative {option.id} is for {option.channel_kind}, but the channel policy "
                f"can also pick {', '.join(others)} channels"
            ]
        return []

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, channel_kinds: np.ndarray) -> Picks:
        n = len(customer_ids)
        return Picks(choice=np.full(n, _id(self.config["creative"])), probability=np.ones(n), features={})


class WeightedCreativePolicy(CreativePolicy):
    """{"type": "weighted"} (the default): among the enabled creatives of the chosen
    channel's kind, a random one with probability proportional to Creative.weight, or to
    {"weights": {"<creative id>": w, …}} when given (creatives it leaves out get 0)."""

    @classmethod
    def config_errors(cls, config: Mapping[str, Any]) -> list[str]:
        return _unknown_keys(config, {"type", "weights"}) + _weights_errors(
            config.get("weights"), "creative", required=False
        )

    def _options(self, kind: str) -> list[tuple[int, float]]:
        """(creative id, weight > 0) of the enabled creatives of `kind`, by id."""
        explicit = self.config.get("weights")
        chosen = []
        for option in sorted(self.context.creatives, key=lambda option: option.id):
            if option.channel_kind != kind or not option.enabled:
                continue
            if explicit is None:
                weight = float(option.weight)
            else:
                weight = float(next((value for key, value in explicit.items() if _id(key) == option.id), 0))
            if weight > 0:
                chosen.append((option.id, weight))
        return chosen

    def context_errors(self) -> list[str]:
        explicit = self.config.get("weights")
        if explicit is None:
            return []
        known = {option.id for option in self.context.creatives}
        return [f"creative {_id(key)} is not a creative of this campaign" for key in explicit if _id(key) not in known]

    def channel_kind_errors(self, kinds: Sequence[str]) -> list[str]:
        return [
            f"no enabled {kind} creative with a weight above 0"
            for kind in sorted(set(kinds))
            if not self._options(kind)
        ]

    def pick(self, customer_ids: np.ndarray, channel_ids: np.ndarray, channel_kinds: np.ndarray) -> Picks:
        n = len(customer_ids)
        choice = np.zeros(n, dtype=np.int64)
        probability = np.zeros(n, dtype=np.float64)
        draws = self.context.uniform(customer_ids, CREATIVE)
        for kind in np.unique(channel_kinds).tolist():
            rows = np.flatnonzero(channel_kinds == kind)
            options = self._options(kind)
            if not options:
                raise PolicyError(f"no enabled {kind} creative with a weight above 0")
            ids = np.array([creative_id for creative_id, _ in options], dtype=np.int64)
            weights = np.array([weight for _, weight in options], dtype=np.float64)
            columns = _weighted_choice(np.broadcast_to(weights, (len(rows), len(weights))), draws[rows])
            choice[rows] = ids[columns]
            probability[rows] = weights[columns] / weights.sum()
        return Picks(choice=choice, probability=probability, features={})


register_policy("fixed", FixedChannelPolicy)
register_policy("weighted", WeightedChannelPolicy)
register_policy("fixed", FixedCreativePolicy)
register_policy("weighted", WeightedCreativePolicy)


# --- a campaign's policies -------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignPolicies:
    channel: ChannelPolicy
    creative: CreativePolicy

    @property
    def label(self) -> str:
        """Message.policy and the touchpoints' "policy": "<channel policy>/<creative policy>"."""
        return f"{self.channel.label}/{self.creative.label}"


@dataclass(frozen=True)
class PolicyProblems:
    """Problems found while resolving a campaign's policies, by the campaign field they
    belong to ("channel_policy", "creative_policy", "creatives")."""

    by_field: dict[str, list[str]]

    def __bool__(self) -> bool:
        return any(self.by_field.values())


def policies_for(
    channel_json: Any, creative_json: Any, context: PolicyContext
) -> tuple[CampaignPolicies | None, PolicyProblems]:
    """Build a campaign's two policies for `context`, or say why not.

    Defaults: an empty channel policy is "fixed" on the single enabled channel whose kind
    has an enabled creative (several such channels: an error asking to choose); an empty
    creative policy is "weighted" by Creative.weight."""
    problems: dict[str, list[str]] = {"channel_policy": [], "creative_policy": [], "creatives": []}
    channel_json = channel_json or {}
    creative_json = creative_json or {}
    problems["channel_policy"] += policy_errors(channel_json, CHANNEL)
    problems["creative_policy"] += policy_errors(creative_json, CREATIVE)
    if any(problems.values()):
        return None, PolicyProblems(problems)

    if not channel_json:
        kinds = {option.channel_kind for option in context.creatives if option.enabled}
        candidates = [option for option in context.channels if option.enabled and option.kind in kinds]
        if not kinds:
            problems["creatives"].append("the campaign has no enabled creative")
            return None, PolicyProblems(problems)
        if len(candidates) != 1:
            names = ", ".join(f"{option.id} ({option.name})" for option in candidates)
            problems["channel_policy"].append(
                f"several enabled channels can send this campaign's creatives ({names}): choose with a channel policy"
                if candidates
                else f"no enabled channel of kind {', '.join(sorted(kinds))}: add or enable one"
            )
            return None, PolicyProblems(problems)
        channel_json = {"type": "fixed", "channel": candidates[0].id}
    channel = _registry[(CHANNEL, channel_json["type"])](channel_json, context)
    creative_json = creative_json or {"type": "weighted"}
    creative = _registry[(CREATIVE, creative_json["type"])](creative_json, context)

    problems["channel_policy"] += channel.context_errors()
    problems["creative_policy"] += creative.context_errors()
    if not any(problems.values()):
        kinds = [option.kind for channel_id in channel.channel_ids() if (option := context.channel(channel_id))]
        kind_problems = creative.channel_kind_errors(kinds)
        # A kind without creatives is a gap in the creatives when they are weighted by their
        # own weights, and in the creative policy when it names creatives or weights.
        by_creatives = creative_json.get("type") == "weighted" and "weights" not in creative_json
        problems["creatives" if by_creatives else "creative_policy"] += kind_problems
    if any(problems.values()):
        return None, PolicyProblems(problems)
    return CampaignPolicies(channel=channel, creative=creative), PolicyProblems(problems)
