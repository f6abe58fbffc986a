"""Prefix indexes for the admin's name search, PostgreSQL only (upper(name) LIKE 'ANN%'
becomes an index range scan instead of a sequential scan over millions of customers)."""

from django.db import migrations

NAMES = ("first_name", "last_name")


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in NAMES:
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS customer_{name}_upper "
                f"ON marketing_customer (upper({name}::text) text_pattern_ops)"
            )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in NAMES:
            schema_editor.execute(f"DROP INDEX IF EXISTS customer_{name}_upper")


class Migration(migrations.Migration):
    dependencies = [("marketing", "0002_touchpoint_brin")]
    operations = [migrations.RunPython(create, drop)]
