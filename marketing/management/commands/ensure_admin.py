"""Development only: make sure someone can log in to the admin of a fresh local install."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create the superuser admin/admin when there is no superuser yet (DEBUG installs only)."

    def handle(self, *args, **options) -> None:
        # A well-known password is fine on a laptop and a break-in anywhere else.
        if not settings.DEBUG:
            raise CommandError(
                "ensure_admin only runs with DEBUG on (a local install); "
                "create a real superuser with `python manage.py createsuperuser`."
            )
        users = get_user_model().objects
        existing = list(users.filter(is_superuser=True).order_by("pk").values_list("username", flat=True))
        if existing:
            self.stdout.write(f"Admin login: superuser(s) already exist: {', '.join(existing)}.")
            return
        users.create_superuser(username=USERNAME, email="admin@localhost", password=PASSWORD)
        self.stdout.write(
            self.style.SUCCESS(f"Admin login created: username {USERNAME!r}, password {PASSWORD!r} (local use only).")
        )
