from django.db import migrations

from analytics.schedules import CRONTAB_SCHEDULES
from marketing.schedules import ensure_crontab_tasks


def create_schedules(apps, schema_editor):
    ensure_crontab_tasks(apps, CRONTAB_SCHEDULES)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(CRONTAB_SCHEDULES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_funnels_report_runs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_schedules, remove_schedules)]
