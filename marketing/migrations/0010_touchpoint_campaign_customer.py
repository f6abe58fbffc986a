"""touchpoint_campaign_kind (campaign_id, kind, occurred_at) becomes
touchpoint_campaign_customer (campaign_id, kind, customer_id, occurred_at, id) INCLUDE
(channel, creative_id), both partial on campaign_id IS NOT NULL: per campaign and kind,
the touchpoints in customer order with what the outcome join reads, so a campaign's
exposures (each customer's first send or hold-out, marketing.outcomes) and its
clicked/opened customers come from index-only scans merged in customer order with no
sort, and the ROI's sends per day from an index-only scan (bench/reports.py ROI of a
1M-message campaign: 2.0-2.1 s, was 2.9-3.4 s). A replacement, not a seventh index:
every touchpoint index costs ingest throughput. It is wider (190 MB for the bench's 2.6M
campaign touchpoints, was 66 MB) and costs only writes of campaign touchpoints (sends,
hold-outs, tracked opens/clicks). Time slices of one campaign's kind (off-policy
evaluation's pending sends, training's send window) still narrow by campaign and kind
here, then filter the time inside the index; the campaign's first/last exposure is no
longer a probe (marketing.outcomes.exposure_span scans; the ROI takes the span from its
own exposures).

Swapped without blocking writes (marketing.indexes.index_swap; hence a non-atomic
migration)."""

from django.db import migrations, models
from django.db.models import Q

from marketing.indexes import index_swap

NEW = models.Index(
    fields=["campaign_id", "kind", "customer", "occurred_at", "id"],
    include=["channel", "creative_id"],
    name="touchpoint_campaign_customer",
    condition=Q(campaign_id__isnull=False),
)
OLD = models.Index(
    fields=["campaign_id", "kind", "occurred_at"],
    name="touchpoint_campaign_kind",
    condition=Q(campaign_id__isnull=False),
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("marketing", "0009_touchpoint_report_indexes")]

    operations = [index_swap("marketing", "touchpoint", add=NEW, remove=OLD)]
