"""Revoke an integration's API key, by name or by the key itself."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketing.errors import DomainError
from marketing.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key (by its name or its value); requests with it are refused from now on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name_or_key", help="The key's name, or the key itself.")

    def handle(self, *args, name_or_key: str, **options) -> None:
        try:
            api_key = api_key_revoke(name_or_key)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"Revoked API key {api_key.name!r} ({api_key.prefix}…) at {api_key.revoked_at:%Y-%m-%d %H:%M:%S} UTC."
        )
