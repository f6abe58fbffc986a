"""`seed_demo`: a believable demo shop (see marketing.demo), through the bulk ingest path.

Deterministic for a --seed, and idempotent: a second run with the same arguments adds
nothing. `make run` calls it with --if-empty at every start.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from marketing import demo


class Command(BaseCommand):
    help = (
        "Seed demo customers, products, orders and behaviour (then every app's registered demo step). "
        "Deterministic for a --seed; running it twice adds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=int, default=5_000, help="How many customers (default 5000).")
        parser.add_argument("--days", type=int, default=365, help="Days of history, ending now (default 365).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when there are customers already (for `make run`)."
        )

    def handle(self, *args, customers: int, days: int, seed: int, if_empty: bool, **options) -> None:
        if if_empty and demo.population_exists():
            self.stdout.write("Demo data: skipped, the database already has customers.")
            return
        if customers < 1:
            raise CommandError("--customers must be at least 1.")
        if days < demo.MIN_DAYS:
            raise CommandError(f"--days must be at least {demo.MIN_DAYS}.")
        started = time.monotonic()
        ctx = demo.run_demo(customers=customers, days=days, seed=seed, stdout=self.stdout)
        for line in demo.format_summary(ctx):
            self.stdout.write(line)
        self.stdout.write(
            self.style.SUCCESS(f"Demo data seeded in {time.monotonic() - started:.1f}s (seed {seed}, {days} days).")
        )
