"""Beat schedules as data: each app's migration creates its periodic tasks once, in
django-celery-beat's tables. Beat's database scheduler then runs them, and what a marketer
changes in the admin (interval, enabled) survives restarts, which a schedule declared in
settings would not: django-celery-beat rewrites those rows at every beat start."""

from __future__ import annotations

SCHEDULES = {
    # name: (task, every seconds)
    "health-check": ("marketing.tasks.health_check", 60),
    "customers-refresh-last-seen": ("marketing.tasks.customers_refresh_last_seen", 60),
}

CRONTAB_SCHEDULES = {
    # name: (task, crontab fields: minute, hour, day_of_week, day_of_month, month_of_year).
    # 02:00 UTC: after the day's touchpoints are in, before marketers start work.
    "rfm-refresh-all": ("marketing.tasks.rfm_refresh_all", {"minute": "0", "hour": "2"}),
}


def ensure_interval_tasks(apps, schedules: dict[str, tuple[str, int]]) -> None:
    """Create the periodic tasks that do not exist yet; never touch existing ones. For use
    in data migrations (RunPython), with the migration's historical `apps`."""
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, (task, seconds) in schedules.items():
        if task_model.objects.filter(name=name).exists():
            continue
        interval, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
        task_model.objects.create(name=name, task=task, interval=interval, enabled=True)


def ensure_crontab_tasks(apps, schedules: dict[str, tuple[str, dict[str, str]]]) -> None:
    """Like `ensure_interval_tasks`, for tasks that run at set times. Crontab fields not
    given are "*"; times are in UTC (beat's CELERY_TIMEZONE)."""
    crontab_model = apps.get_model("django_celery_beat", "CrontabSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, (task, fields) in schedules.items():
        if task_model.objects.filter(name=name).exists():
            continue
        crontab = crontab_model.objects.filter(timezone="UTC", **_crontab_fields(fields)).first()
        if crontab is None:
            crontab = crontab_model.objects.create(timezone="UTC", **_crontab_fields(fields))
        task_model.objects.create(name=name, task=task, crontab=crontab, enabled=True)


def _crontab_fields(fields: dict[str, str]) -> dict[str, str]:
    names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
    return {name: fields.get(name, "*") for name in names}
