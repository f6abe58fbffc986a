"""The mlcore layer's demo data (a `seed_demo` step after the RFM refresh and the
campaigns' segments): product recommendations fitted on the demo's purchases, so
`{{ recommendations }}` in a creative and the customer page's panel show something on a
fresh machine. Idempotent: when a champion exists, nothing is fitted."""

from __future__ import annotations

from typing import Any

from mlcore import registry
from mlcore.recommendations import TASK, recommendations_fit


def demo_recommendations(ctx: Any) -> None:
    if registry.champion_id(TASK) is not None:
        return
    version = recommendations_fit()
    ctx.summary["recommendations (customers, products)"] = f"{version.metrics['customers']}, {version.metrics['items']}"
