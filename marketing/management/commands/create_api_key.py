"""Create an integration's API key and print it, once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketing.errors import DomainError
from marketing.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for an integration and print it. The key is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The integration the key is for, e.g. 'crm-sync' (unique).")
        parser.add_argument(
            "--rate-limit",
            type=int,
            default=None,
            metavar="N",
            help="Requests per minute for this key (default: API_RATE_LIMIT_PER_MINUTE).",
        )

    def handle(self, *args, name: str, rate_limit: int | None, **options) -> None:
        try:
            api_key, raw_key = api_key_create(name, rate_limit_per_minute=rate_limit)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(raw_key)
        # The note goes to stderr, so `KEY=$(manage.py create_api_key x)` captures the key alone.
        self.stderr.write(
            f"Created API key {api_key.name!r} ({api_key.prefix}…). Store it now: it will not be shown again.\n"
            f"Send it as 'Authorization: Token <key>'."
        )
