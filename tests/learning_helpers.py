"""Planted learning data built as touchpoints (the only thing mlcore learns from): customers
with 0-4 prior email opens, one send each, and a purchase drawn with a known probability,
so a model that learns must rank engaged customers first. Small (hundreds of rows) so
training runs on a CPU in about a second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
from threadpoolctl import threadpool_limits

from marketing.models import Customer, Touchpoint

# Relative to the real clock: the API trains on the sends before the real now.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
SEND_AT = NOW - timedelta(days=10)
CAMPAIGN = 1
# Small and quick on a CPU (the engine's defaults are sized for a GPU).
FAST = {"hidden": [32], "max_epochs": 60, "batch_size": 256, "baselines": False}


def plant(
    n: int = 300, *, seed: int = 0, prefix: str = "c", held_out_share: float = 0.0, uplift: bool = False
) -> list[int]:
    """`n` customers each sent (or held out) once at SEND_AT by CAMPAIGN; returns their ids.

    Propensity (uplift False): P(purchase within 7 days) = 0.05 + 0.18 * opens (+0.1 on sms).
    Uplift (True): held-out customers buy with 0.1 whatever their opens; sent ones with
    0.1 + 0.15 * opens: the engaged are the persuadables."""
    rng = np.random.default_rng(seed)
    opens = rng.integers(0, 5, size=n)
    sms = rng.random(n) < 0.5
    held = rng.random(n) < held_out_share
    if uplift:
        p = np.where(held, 0.1, 0.1 + 0.15 * opens)
    else:
        p = 0.05 + 0.18 * opens + 0.1 * sms
    bought = rng.random(n) < p
    customers = Customer.objects.bulk_create(
        [Customer(external_id=f"{prefix}{i}", email=f"{prefix}{i}@example.com") for i in range(n)]
    )
    Customer.objects.filter(pk__in=[c.pk for c in customers]).update(created_at=NOW - timedelta(days=200))
    touchpoints = []
    for i, customer in enumerate(customers):
        for k in range(int(opens[i])):
            touchpoints.append(
                Touchpoint(
                    customer=customer,
                    kind="open",
                    channel="email",
                    occurred_at=SEND_AT - timedelta(days=3 + k),
                    event_id=f"{prefix}open{i}-{k}",
                )
            )
        touchpoints.append(
            Touchpoint(
                customer=customer,
                kind="held_out" if held[i] else "sent",
                channel="sms" if sms[i] else "email",
                campaign_id=CAMPAIGN,
                creative_id=21 if sms[i] else 11,
                occurred_at=SEND_AT,
                event_id=f"{prefix}send{i}",
            )
        )
        if bought[i]:
            touchpoints.append(
                Touchpoint(
                    customer=customer,
                    kind="purchase",
                    occurred_at=SEND_AT + timedelta(days=1),
                    order_id=f"{prefix}o{i}",
                    revenue=Decimal("10.00"),
                    event_id=f"{prefix}buy{i}",
                )
            )
    Touchpoint.objects.bulk_create(touchpoints)
    return [c.pk for c in customers]


class OneThread:
    """A TestCase mixin: scikit-learn's OpenMP on one thread. On a loaded shared CPU its
    worker threads spin-wait and a one-second fit takes a minute."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.enterClassContext(threadpool_limits(limits=1))
