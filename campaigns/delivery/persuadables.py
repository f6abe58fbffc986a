"""The "only persuadables" audience option: a campaign with `persuadables_only` reaches only
the customers whose predicted uplift (the uplift champion's CustomerScore, mlcore.uplift)
is above `min_uplift` (default 0: the campaign is predicted to raise their chance of the
goal). The filter applies to the audience before the holdout is drawn, so the held-out
customers are persuadables too and the measured lift is the lift among them.

Without an uplift champion the option cannot be applied: a launch is refused with an error
naming `persuadables_only`, rather than silently sending to everyone or to nobody.
"""

from __future__ import annotations

from django.db import connection

from campaigns.models import Campaign
from marketing.errors import RowError
from mlcore import registry
from mlcore.models import CustomerScore, ModelVersion

MIN_UPLIFT_RANGE = (-1.0, 1.0)


def persuadables_errors(campaign: Campaign, *, for_launch: bool = True) -> list[RowError]:
    """What keeps the option from working: min_uplift out of range; at launch, no uplift
    champion to read scores from."""
    errors = []
    low, high = MIN_UPLIFT_RANGE
    if campaign.min_uplift is None or not low <= campaign.min_uplift <= high:
        errors.append(
            RowError(
                row=None,
                field="min_uplift",
                message=f"must be between {low:g} and {high:g} (a difference of probabilities)",
            )
        )
    if for_launch and campaign.persuadables_only and registry.champion_id(ModelVersion.Task.UPLIFT) is None:
        errors.append(
            RowError(
                row=None,
                field="persuadables_only",
                message="no uplift model is champion yet: train one (POST /api/v1/model-versions/train with "
                '{"task": "uplift"}) or turn off "only persuadables"',
            )
        )
    return errors


def persuadables_filter(base: str, params: list, campaign: Campaign) -> tuple[str, list]:
    """`base` (SQL selecting customer_id) narrowed to the campaign's persuadables; unchanged
    without the option. The uplift champion must exist (checked by persuadables_errors)."""
    if not campaign.persuadables_only:
        return base, params
    version_id = registry.champion_id(ModelVersion.Task.UPLIFT)
    scores = connection.ops.quote_name(CustomerScore._meta.db_table)
    sql = (
        f"SELECT p.customer_id FROM ({base}) p WHERE EXISTS (SELECT 1 FROM {scores} s "
        f"WHERE s.model_version_id = %s AND s.customer_id = p.customer_id AND s.score > %s)"
    )
    return sql, [*params, version_id if version_id is not None else -1, float(campaign.min_uplift)]
