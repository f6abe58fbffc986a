"""Keep Customer.last_seen_at current, out of the ingest hot path.

Updating customers inside every touchpoint batch would lock thousands of customer rows per
batch (and deadlock concurrent batches); instead a beat task folds new touchpoints in,
set-based, from a checkpoint in the touchpoint log. Re-reading an overlap behind the
checkpoint catches rows whose transaction committed after a higher id was seen; the
update only ever moves last_seen_at forward, so reading a row twice is harmless.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Max

from marketing.models import SYSTEM_KINDS, IngestCheckpoint, Touchpoint

CHECKPOINT = "customers.last_seen"
OVERLAP = 200_000
MAX_ROWS_PER_RUN = 5_000_000


def customers_refresh_last_seen() -> int:
    """Returns the number of customers whose last_seen_at moved."""
    with transaction.atomic():
        IngestCheckpoint.objects.get_or_create(name=CHECKPOINT)
        checkpoint = IngestCheckpoint.objects.select_for_update().get(name=CHECKPOINT)
        newest = Touchpoint.objects.aggregate(newest=Max("id"))["newest"] or 0
        if newest <= checkpoint.last_id:
            return 0
        upto = min(newest, checkpoint.last_id + MAX_ROWS_PER_RUN)
        start = max(0, checkpoint.last_id - OVERLAP)
        kinds = sorted(SYSTEM_KINDS)
        placeholders = ", ".join(["%s"] * len(kinds))
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE marketing_customer SET last_seen_at = seen.latest
                FROM (
                    SELECT customer_id, max(occurred_at) AS latest FROM marketing_touchpoint
                    WHERE id > %s AND id <= %s AND kind NOT IN ({placeholders})
                    GROUP BY customer_id
                ) AS seen
                WHERE marketing_customer.id = seen.customer_id
                  AND (marketing_customer.last_seen_at IS NULL OR marketing_customer.last_seen_at < seen.latest)
                """,
                [start, upto, *kinds],
            )
            moved = cursor.rowcount
        IngestCheckpoint.objects.filter(pk=checkpoint.pk).update(last_id=upto)
    return moved
