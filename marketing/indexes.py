"""Swapping an index on a big, busy table (the touchpoint log) without blocking writes.

`index_swap(model, add, remove)` is a migration operation: on PostgreSQL the new index is
built CONCURRENTLY before the old one is dropped (CONCURRENTLY too), so ingest is never
blocked and no query is left without an index meanwhile; both statements are guarded with
IF [NOT] EXISTS, so a run that stopped half way can simply be run again. The migration
using it must be non-atomic (`atomic = False`: CONCURRENTLY cannot run in a transaction).
Other databases (SQLite in tests) get the plain statements. The SQL comes from Django's
own index DDL, so fields, INCLUDE columns and partial conditions are rendered as for any
index; the migration's state operations say what changed."""

from __future__ import annotations

from django.db import migrations, models


def _swap(model, schema_editor, add: models.Index, remove: models.Index) -> None:
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(model, add)
        schema_editor.remove_index(model, remove)
        return
    create = str(add.create_sql(model, schema_editor, concurrently=True))
    schema_editor.execute(create.replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX CONCURRENTLY IF NOT EXISTS", 1))
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(remove.name)}")


def index_swap(app_label: str, model_name: str, *, add: models.Index, remove: models.Index) -> migrations.Operation:
    """Replace index `remove` by `add` on app_label.model_name (state and database)."""

    def forwards(apps, schema_editor) -> None:
        _swap(apps.get_model(app_label, model_name), schema_editor, add, remove)

    def backwards(apps, schema_editor) -> None:
        _swap(apps.get_model(app_label, model_name), schema_editor, remove, add)

    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.RemoveIndex(model_name=model_name, name=remove.name),
            migrations.AddIndex(model_name=model_name, index=add),
        ],
        database_operations=[migrations.RunPython(forwards, backwards)],
    )
