"""touchpoint_kind_time (kind, occurred_at) becomes touchpoint_kind_customer (kind,
customer_id, occurred_at): per kind, each customer's touchpoints in time order, which
the funnel reads by index-only scans in customer order (analytics.funnels.sql,
chain_by_customer: 2.5 s instead of 7-9 s for bench/reports.py's 4-step funnel) and
which serves the segment event leaves (kind + customer + time) directly. A replacement,
not a seventh index: every touchpoint index costs ingest throughput. Time slices of one
kind (attribution, the ROI goal read) still narrow by kind in this index and by the
BRIN index on occurred_at.

On PostgreSQL the new index is built CONCURRENTLY before the old one is dropped
(CONCURRENTLY too), so ingest is never blocked and no query is left without an index
meanwhile; hence a non-atomic migration. SQLite (tests) gets the plain statements."""

from django.db import migrations, models

NEW = models.Index(fields=["kind", "customer", "occurred_at"], name="touchpoint_kind_customer")
OLD = models.Index(fields=["kind", "occurred_at"], name="touchpoint_kind_time")


def _swap(apps, schema_editor, add: models.Index, remove: models.Index) -> None:
    model = apps.get_model("marketing", "Touchpoint")
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(model._meta.db_table)
        columns = ", ".join(schema_editor.quote_name(model._meta.get_field(name).column) for name in add.fields)
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {schema_editor.quote_name(add.name)} ON {table} ({columns})"
        )
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(remove.name)}")
        return
    schema_editor.add_index(model, add)
    schema_editor.remove_index(model, remove)


def forwards(apps, schema_editor) -> None:
    _swap(apps, schema_editor, NEW, OLD)


def backwards(apps, schema_editor) -> None:
    _swap(apps, schema_editor, OLD, NEW)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("marketing", "0008_customer_phone")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveIndex(model_name="touchpoint", name="touchpoint_kind_time"),
                migrations.AddIndex(model_name="touchpoint", index=NEW),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        )
    ]
