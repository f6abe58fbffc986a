from django.db import migrations

from campaigns.schedules import CRONTAB_SCHEDULES, RFM_GROUP_DESCRIPTIONS, rfm_segment_name
from marketing.schedules import ensure_crontab_tasks


def create_schedules(apps, schema_editor):
    ensure_crontab_tasks(apps, CRONTAB_SCHEDULES)


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(CRONTAB_SCHEDULES)).delete()


def create_rfm_segments(apps, schema_editor):
    """One rules segment per named RFM group, unless a segment of that name exists."""
    segment_model = apps.get_model("campaigns", "Segment")
    for group, description in RFM_GROUP_DESCRIPTIONS.items():
        segment_model.objects.get_or_create(
            name=rfm_segment_name(group),
            defaults={"kind": "rules", "definition": {"rfm": {"group": group}}, "description": description},
        )


def remove_rfm_segments(apps, schema_editor):
    segment_model = apps.get_model("campaigns", "Segment")
    for group in RFM_GROUP_DESCRIPTIONS:
        segment_model.objects.filter(name=rfm_segment_name(group), definition={"rfm": {"group": group}}).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_segment_rebuild_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [
        migrations.RunPython(create_schedules, remove_schedules),
        migrations.RunPython(create_rfm_segments, remove_rfm_segments),
    ]
