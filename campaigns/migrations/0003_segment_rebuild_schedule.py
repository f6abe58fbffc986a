from django.db import migrations

from campaigns.schedules import SCHEDULES
from marketing.schedules import ensure_interval_tasks


def create_schedules(apps, schema_editor):
    ensure_interval_tasks(apps, SCHEDULES)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_segment_rebuilds"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_schedules, remove_schedules)]
