from django.db import migrations

from campaigns.schedules import DELIVERY_SCHEDULES
from marketing.schedules import ensure_interval_tasks


def create_schedules(apps, schema_editor):
    ensure_interval_tasks(apps, DELIVERY_SCHEDULES)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(DELIVERY_SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0005_delivery"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_schedules, remove_schedules)]
