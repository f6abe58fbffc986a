"""touchpoint_kind_time (kind, occurred_at) becomes touchpoint_kind_customer (kind,
customer_id, occurred_at): per kind, each customer's touchpoints in time order, which
the funnel reads by index-only scans in customer order (analytics.funnels.sql,
chain_by_customer: 2.5 s instead of 7-9 s for bench/reports.py's 4-step funnel) and
which serves the segment event leaves (kind + customer + time) directly. A replacement,
not a seventh index: every touchpoint index costs ingest throughput. Time slices of one
kind (attribution, the ROI goal read) still narrow by kind in this index and by the
BRIN index on occurred_at.

Swapped without blocking writes (marketing.indexes.index_swap; hence a non-atomic
migration)."""

from django.db import migrations, models

from marketing.indexes import index_swap

NEW = models.Index(fields=["kind", "customer", "occurred_at"], name="touchpoint_kind_customer")
OLD = models.Index(fields=["kind", "occurred_at"], name="touchpoint_kind_time")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("marketing", "0008_customer_phone")]

    operations = [index_swap("marketing", "touchpoint", add=NEW, remove=OLD)]
