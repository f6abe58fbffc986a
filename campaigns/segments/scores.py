"""Rule-tree leaves on the learning models' customer scores (mlcore.scores):

- `{"propensity": {"gte": 0.3}}`: the propensity champion's score (P(goal) after a typical
  send, see mlcore.propensity) compared with each given bound;
- `{"uplift": {"gt": 0}}`: the uplift champion's predicted incremental P(goal).

Comparisons are those of the other numeric leaves (eq, gt, gte, lt, lte; all must hold).
The score read is the champion's at rebuild time: a promotion or rollback rewrites the
scores, and the next rebuild follows. Without a champion (or for a customer it did not
score, e.g. one created since) the leaf selects nobody, as a cluster leaf does.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q

from campaigns.segments.rules import COMPARISON_OPS, Context, RuleError, _ptr, _validate_comparison, register_leaf
from mlcore import registry
from mlcore.models import CustomerScore, ModelVersion

NOBODY = Q(pk__isnull=True)
_LOOKUPS = {"eq": "exact", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}
SCORE_TASKS = {"propensity": ModelVersion.Task.PROPENSITY, "uplift": ModelVersion.Task.UPLIFT}


def score_comparison_errors(body: Any, path: str) -> list[RuleError]:
    errors = _validate_comparison(body, path, "number")
    if not errors:
        for op, value in body.items():
            if not -1 <= value <= 1:
                errors.append(RuleError(_ptr(path, op), "a score is between -1 and 1 (a probability or a difference)"))
    return errors


def score_q(task: str, comparisons: dict) -> Q:
    """Customers whose champion `task` score satisfies every comparison."""
    version_id = registry.champion_id(task)
    if version_id is None:
        return NOBODY
    rows = CustomerScore.objects.filter(
        model_version_id=version_id, **{f"score__{_LOOKUPS[op]}": float(value) for op, value in comparisons.items()}
    )
    return Q(Exists(rows.filter(customer_id=OuterRef("pk"))))


def _validate(body: Any, path: str, ctx: Context) -> list[RuleError]:
    return score_comparison_errors(body, path)


def _schema(description: str) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": {op: {"type": "number", "minimum": -1, "maximum": 1} for op in COMPARISON_OPS},
        "additionalProperties": False,
        "minProperties": 1,
    }


register_leaf(
    "propensity",
    _validate,
    lambda body, ctx: score_q(SCORE_TASKS["propensity"], body),
    _schema(
        "The propensity champion's score (P(goal) after a typical send) compared with each bound, "
        'e.g. {"gte": 0.3}; nobody without a champion.'
    ),
)
register_leaf(
    "uplift",
    _validate,
    lambda body, ctx: score_q(SCORE_TASKS["uplift"], body),
    _schema(
        'The uplift champion\'s predicted incremental P(goal) compared with each bound, e.g. {"gt": 0} for '
        "the persuadables; nobody without a champion."
    ),
)
