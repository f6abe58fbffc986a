"""BRIN index on touchpoint time, PostgreSQL only: tiny, and cheap to maintain on an
append-only table whose physical order follows time. SQLite has no BRIN."""

from django.db import migrations


def create_brin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS touchpoint_time_brin ON marketing_touchpoint "
            "USING brin (occurred_at) WITH (pages_per_range = 32)"
        )


def drop_brin(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS touchpoint_time_brin")


class Migration(migrations.Migration):
    dependencies = [("marketing", "0001_initial")]
    operations = [migrations.RunPython(create_brin, drop_brin)]
