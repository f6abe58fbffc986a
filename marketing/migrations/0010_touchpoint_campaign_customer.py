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

On PostgreSQL the new index is built CONCURRENTLY before the old one is dropped
(CONCURRENTLY too), so ingest is never blocked and no query is left without an index
meanwhile; hence a non-atomic migration. SQLite (tests) gets the plain statements
(without INCLUDE, which it does not know)."""

from django.db import migrations, models
from django.db.models import Q

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


def _swap(apps, schema_editor, add: models.Index, remove: models.Index) -> None:
    model = apps.get_model("marketing", "Touchpoint")
    if schema_editor.connection.vendor == "postgresql":
        quote = schema_editor.quote_name
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(model._meta.get_field(name).column) for name in add.fields)
        include = ", ".join(quote(model._meta.get_field(name).column) for name in add.include)
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(add.name)} ON {table} ({columns})"
            + (f" INCLUDE ({include})" if include else "")
            + f" WHERE {quote('campaign_id')} IS NOT NULL"
        )
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(remove.name)}")
        return
    schema_editor.add_index(model, add)
    schema_editor.remove_index(model, remove)


def forwards(apps, schema_editor) -> None:
    _swap(apps, schema_editor, NEW, OLD)


def backwards(apps, schema_editor) -> None:
    _swap(apps, schema_editor, OLD, NEW)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("marketing", "0009_touchpoint_report_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="touchpoint", name="touchpoint_campaign_kind"),
                migrations.AddIndex(model_name="touchpoint", index=NEW),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        )
    ]
