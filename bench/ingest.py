"""Ingest benchmark: touchpoints/s through POST /api/v1/touchpoints/bulk (10,000-row batches,
gunicorn on loopback, PostgreSQL, the touchpoint table already holding 10M rows) beside the
raw COPY rate into the same table in the same run, and the customer bulk upsert rate.

    python bench/ingest.py

By default it starts a PostgreSQL server of its own (the machine's PostgreSQL binaries,
production-style settings printed with the results, data in var/bench-pg); with
BENCH_DATABASE_URL it uses that database instead. The first run fills the database with
10M touchpoints (several minutes on 2 cores); later runs reuse it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PREFILL_TOUCHPOINTS = 10_000_000
PREFILL_CUSTOMERS = 1_000_000
BATCH = 10_000
NOW = datetime.now(UTC)
KINDS = ["visit", "visit", "visit", "open", "click", "add_to_cart", "purchase", "trial_started", "signup", "impression"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Production-style settings for the benchmark's own server. PostgreSQL's defaults
# (shared_buffers=128MB, max_wal_size=1GB) make a checkpoint every few seconds under
# ingest, and each one re-logs every index page touched after it in full: random
# per-customer index inserts then cost ~3 KB of WAL a row. See README "Tuning PostgreSQL".
OWN_PG_SETTINGS = {
    "shared_buffers": "4GB",
    "max_wal_size": "16GB",
    "min_wal_size": "2GB",
    "checkpoint_timeout": "30min",
    "checkpoint_completion_target": "0.9",
    "wal_compression": "lz4",
    "wal_buffers": "64MB",
    "maintenance_work_mem": "1GB",
    "work_mem": "64MB",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}


class OwnPostgres:
    """A PostgreSQL server of the benchmark's own (data kept in var/bench-pg between runs),
    so its settings are known and the machine's shared server is left as it is."""

    def __init__(self, port: int):
        self.port = port
        self.bindir = Path(
            os.environ.get("PG_BINDIR")
            or max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        )
        self.datadir = ROOT / "var" / "bench-pg"
        self.user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.user, *args], check=True, stdout=subprocess.DEVNULL)

    def start(self) -> str:
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            if self.user:
                shutil.chown(self.datadir, "postgres", "postgres")
            log(f"initdb {self.datadir}")
            self._run(
                str(self.bindir / "initdb"), "-D", str(self.datadir), "--auth=trust", "-U", "postgres", "-E", "UTF8"
            )
        options = " ".join(f"-c {key}={value}" for key, value in OWN_PG_SETTINGS.items())
        options += f" -p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.datadir}"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.datadir / "server.log"),
            "-w",
            "start",
        )
        return f"postgres://postgres@127.0.0.1:{self.port}/marketing_bench"

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")


def ensure_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    env = server_env(url)
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)


def server_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DEBUG="false",
        LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    if os.environ.get("BENCH_REDIS_URL"):
        env["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    return env


def prefill(conn: psycopg.Connection) -> None:
    customers = conn.execute("SELECT count(*) FROM marketing_customer WHERE external_id LIKE 'bench-c-%%'").fetchone()[
        0
    ]
    if customers < PREFILL_CUSTOMERS:
        log(f"prefill: {PREFILL_CUSTOMERS:,} customers")
        conn.execute(
            """
            INSERT INTO marketing_customer (external_id, email, phone, first_name, last_name, country, timezone,
                locale, attributes, email_opt_in, email_opt_in_source, sms_opt_in, sms_opt_in_source, push_opt_in,
                push_opt_in_source, is_stub)
            SELECT 'bench-c-' || i, 'c' || i || '@example.com', '', 'First', 'Last', 'US', 'America/New_York', 'en',
                   jsonb_build_object('tier', (ARRAY['gold','silver','bronze'])[1 + i %% 3]),
                   i %% 10 < 7, 'bench', i %% 3 = 0, 'bench', false, '', false
            FROM generate_series(1, %s) i
            ON CONFLICT (external_id) DO NOTHING
            """,
            [PREFILL_CUSTOMERS],
        )
        conn.commit()
    have = conn.execute("SELECT count(*) FROM marketing_touchpoint").fetchone()[0]
    first_id = conn.execute("SELECT min(id) FROM marketing_customer WHERE external_id LIKE 'bench-c-%%'").fetchone()[0]
    chunk = 1_000_000
    while have < PREFILL_TOUCHPOINTS:
        n = min(chunk, PREFILL_TOUCHPOINTS - have)
        log(f"prefill: touchpoints {have:,} -> {have + n:,}")
        conn.execute(
            """
            INSERT INTO marketing_touchpoint (customer_id, kind, channel, occurred_at, revenue, currency,
                order_id, sku, event_id, properties)
            SELECT %(first)s + (i * 7919) %% %(customers)s,
                   k.kind,
                   (ARRAY['web','email','app','pos'])[1 + i %% 4],
                   now() - make_interval(secs => (%(total)s - i) * 6.3),
                   CASE WHEN k.kind = 'purchase' THEN 10 + (i %% 90) END,
                   CASE WHEN k.kind = 'purchase' THEN 'USD' ELSE '' END,
                   CASE WHEN k.kind = 'purchase' THEN 'po-' || i ELSE '' END,
                   CASE WHEN k.kind = 'purchase' THEN 'SKU-' || (i %% 500) ELSE '' END,
                   'prefill-' || i, '{"src": "prefill"}'::jsonb
            FROM generate_series(%(start)s::bigint, %(stop)s::bigint) i
            CROSS JOIN LATERAL (SELECT (ARRAY['visit','visit','open','click','add_to_cart','purchase','sent'])
                                       [1 + (i * 31) %% 7] AS kind) k
            ON CONFLICT DO NOTHING
            """,
            {
                "first": first_id,
                "customers": PREFILL_CUSTOMERS,
                "total": PREFILL_TOUCHPOINTS,
                "start": have + 1,
                "stop": have + n,
            },
        )
        conn.commit()
        have += n
    conn.commit()
    conn.autocommit = True  # VACUUM cannot run in a transaction
    conn.execute("VACUUM ANALYZE marketing_touchpoint")
    conn.execute("VACUUM ANALYZE marketing_customer")
    conn.autocommit = False


def prewarm(conn: psycopg.Connection) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    relations = conn.execute(
        """
        SELECT c.oid::regclass::text FROM pg_class c
        WHERE c.relname IN ('marketing_touchpoint', 'marketing_customer')
           OR c.oid IN (SELECT indexrelid FROM pg_index
                        WHERE indrelid IN ('marketing_touchpoint'::regclass, 'marketing_customer'::regclass))
        """
    ).fetchall()
    for (relation,) in relations:
        conn.execute("SELECT pg_prewarm(%s)", [relation])
    conn.commit()


def api_key(conn: psycopg.Connection) -> str:
    raw = "mk_bench_" + secrets.token_urlsafe(24)
    conn.execute("DELETE FROM marketing_apikey WHERE name = 'bench'")
    conn.execute(
        "INSERT INTO marketing_apikey (name, prefix, key_sha256, rate_limit_per_minute) VALUES ('bench', %s, %s, %s)",
        [raw[:10], hashlib.sha256(raw.encode()).hexdigest(), 1_000_000],
    )
    conn.commit()
    return raw


def touchpoint_rows(run: str, batch_no: int, rng: random.Random) -> list[dict]:
    rows = []
    for j in range(BATCH):
        n = batch_no * BATCH + j
        kind = rng.choice(KINDS)
        row = {
            "event_id": f"{run}-{n}",
            "customer_external_id": f"bench-c-{rng.randint(1, PREFILL_CUSTOMERS)}",
            "kind": kind,
            "channel": rng.choice(("web", "email", "app")),
            # A live stream: events from the last hour (a history import is another workload).
            "occurred_at": (NOW - timedelta(seconds=rng.randint(0, 3600))).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "properties": {"page": f"/p/{rng.randint(1, 500)}", "ab": rng.choice("AB")},
        }
        if kind == "purchase":
            row.update(
                order_id=f"{run}-o{n}",
                sku=f"SKU-{rng.randint(1, 500)}",
                revenue=f"{rng.randint(100, 9999) / 100}",
                currency="USD",
            )
        if j % 1000 == 0:  # a few unknown customers: stubs are part of real traffic
            row["customer_external_id"] = f"{run}-new-{n}"
        rows.append(row)
    return rows


def customer_rows(run: str, batch_no: int, rng: random.Random) -> list[dict]:
    rows = []
    for j in range(BATCH):
        if j % 2:  # half updates of existing customers, half new ones
            external_id = f"bench-c-{rng.randint(1, PREFILL_CUSTOMERS)}"
        else:
            external_id = f"{run}-cust-{batch_no}-{j}"
        rows.append(
            {
                "external_id": external_id,
                "email": f"{external_id}@example.org",
                "first_name": rng.choice(("Ada", "Linus", "Grace", "Ken")),
                "last_name": rng.choice(("Lovelace", "Torvalds", "Hopper", "Thompson")),
                "country": rng.choice(("US", "DE", "GB")),
                "email_opt_in": rng.random() < 0.7,
                "attributes": {"tier": rng.choice(("gold", "silver")), "score": rng.randint(1, 100)},
            }
        )
    return rows


class Server:
    def __init__(self, url: str, port: int, workers: int):
        self.port = port
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "gunicorn",
                "marketing.wsgi",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--timeout",
                "120",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=server_env(url),
            start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/schema/")
                conn.getresponse().read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def post_all(port: int, key: str, path: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[dict]]:
    local = threading.local()

    def post(body: bytes) -> dict:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        local.conn.request(
            "POST", path, body=body, headers={"Authorization": f"Token {key}", "Content-Type": "application/json"}
        )
        response = local.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:500]!r}")
        return json.loads(data)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(post, bodies))
    return time.perf_counter() - started, results


def raw_copy_rate(url: str, run: str, batches: int, connections: int, rng: random.Random) -> float:
    """COPY pre-formatted rows straight into marketing_touchpoint over as many connections
    as the API had requests in flight: what the table itself takes on this machine."""
    with psycopg.connect(url) as conn:
        first_id = conn.execute(
            "SELECT min(id) FROM marketing_customer WHERE external_id LIKE 'bench-c-%%'"
        ).fetchone()[0]
    buffers = []
    for b in range(batches):
        out = io.StringIO()
        for row in touchpoint_rows(f"{run}-copy", b, rng):
            customer_id = first_id + int(row["customer_external_id"].rsplit("-", 1)[1]) % PREFILL_CUSTOMERS
            out.write(
                "\t".join(
                    [
                        str(customer_id),
                        row["kind"],
                        row["channel"],
                        row["occurred_at"],
                        row.get("revenue", "\\N"),
                        row.get("currency", ""),
                        row.get("order_id", ""),
                        row.get("sku", ""),
                        row["event_id"],
                        orjson.dumps(row["properties"]).decode(),
                    ]
                )
                + "\n"
            )
        buffers.append(out.getvalue().encode())
    columns = "customer_id, kind, channel, occurred_at, revenue, currency, order_id, sku, event_id, properties"

    def copy_share(share: list[bytes]) -> None:
        with psycopg.connect(url) as conn:
            for data in share:
                with conn.cursor() as cur, cur.copy(f"COPY marketing_touchpoint ({columns}) FROM STDIN") as copy:
                    copy.write(data)
                conn.commit()

    shares = [buffers[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(copy_share, shares))
    return batches * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="timed touchpoint batches of 10,000 rows")
    parser.add_argument("--customer-batches", type=int, default=10)
    parser.add_argument("--warmup-batches", type=int, default=20, help="untimed COPY batches before timing")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers")
    parser.add_argument("--concurrency", type=int, default=3, help="client connections in flight")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--pg-port", type=int, default=5499, help="port of the benchmark's own PostgreSQL")
    args = parser.parse_args()

    own = None
    if os.environ.get("BENCH_DATABASE_URL"):
        url = os.environ["BENCH_DATABASE_URL"]
    else:
        own = OwnPostgres(args.pg_port)
        url = own.start()
    try:
        run_benchmark(url, args)
    finally:
        if own:
            own.stop()


def run_benchmark(url: str, args: argparse.Namespace) -> None:
    ensure_database(url)
    rng = random.Random(7)
    run = f"r{int(time.time())}"
    with psycopg.connect(url) as conn:
        prefill(conn)
        key = api_key(conn)
        table_rows = conn.execute("SELECT count(*) FROM marketing_touchpoint").fetchone()[0]
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        settings_line = ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in (
                "shared_buffers",
                "max_wal_size",
                "checkpoint_timeout",
                "wal_compression",
                "synchronous_commit",
            )
        )

        log("building request bodies")
        warmup = [orjson.dumps({"touchpoints": touchpoint_rows(f"{run}-warm", b, rng)}) for b in range(2)]
        bodies = [orjson.dumps({"touchpoints": touchpoint_rows(run, b, rng)}) for b in range(args.batches)]
        customer_bodies = [
            orjson.dumps({"customers": customer_rows(run, b, rng)}) for b in range(args.customer_batches)
        ]

        server = Server(url, args.port, args.workers)
        try:
            # Both timed phases start from the same state: the table's and customers' pages
            # cached, and the index pages already written once since the last checkpoint
            # (the first change of a page after a checkpoint logs the whole page; a phase
            # timed right after a restart would pay that for the other one).
            log("warming up: prewarm, untimed COPY and API batches")
            prewarm(conn)
            raw_copy_rate(url, f"{run}-warm", args.warmup_batches, args.concurrency, rng)
            post_all(args.port, key, "/api/v1/touchpoints/bulk", warmup, args.concurrency)
            log(f"timing {args.batches} touchpoint batches of {BATCH:,}")
            elapsed, results = post_all(args.port, key, "/api/v1/touchpoints/bulk", bodies, args.concurrency)
            inserted = sum(r["inserted"] for r in results)
            api_rate = args.batches * BATCH / elapsed
            log(f"timing {args.customer_batches} customer batches of {BATCH:,}")
            c_elapsed, c_results = post_all(args.port, key, "/api/v1/customers/bulk", customer_bodies, args.concurrency)
            customer_rate = args.customer_batches * BATCH / c_elapsed
        finally:
            server.stop()
        log("timing raw COPY into marketing_touchpoint")
        copy_rate = raw_copy_rate(url, run, args.batches, args.concurrency, rng)
        single_copy_rate = raw_copy_rate(url, f"{run}-single", max(10, args.batches // 2), 1, rng)

    if inserted != args.batches * BATCH:
        raise SystemExit(f"expected {args.batches * BATCH} inserted, the API reported {inserted}")
    created = sum(r["created"] for r in c_results)
    updated = sum(r["updated"] for r in c_results)
    print(f"PostgreSQL: {server_version}; {settings_line}")
    print(f"touchpoint table before the run: {table_rows:,} rows")
    print(
        f"bulk API (gunicorn -w {args.workers}, {args.concurrency} in flight, {BATCH:,}-row batches): "
        f"{api_rate:,.0f} touchpoints/s ({inserted:,} inserted in {elapsed:.1f} s)"
    )
    print(
        f"raw COPY into the same table, {args.concurrency} connections (as many as requests in flight): "
        f"{copy_rate:,.0f} rows/s -> ratio API / raw COPY {api_rate / copy_rate:.2f}"
    )
    print(
        f"raw COPY into the same table, 1 connection (one COPY stream): "
        f"{single_copy_rate:,.0f} rows/s -> ratio API / raw COPY {api_rate / single_copy_rate:.2f}"
    )
    print(f"customer bulk upsert: {customer_rate:,.0f} rows/s ({created:,} created, {updated:,} updated)")


if __name__ == "__main__":
    main()
