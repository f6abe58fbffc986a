from django.db import migrations

from marketing.schedules import ensure_crontab_tasks
from mlcore.schedules import LEARNING_SCHEDULES


def create_schedules(apps, schema_editor):
    ensure_crontab_tasks(apps, LEARNING_SCHEDULES)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(LEARNING_SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mlcore", "0003_artifacts_scores"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_schedules, remove_schedules)]
