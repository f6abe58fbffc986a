"""Delivery benchmark (issue 4, point 9) on PostgreSQL:

(a) launching a campaign to a 1M-customer audience through campaigns.delivery.launch.run_launch:
    selection (segment membership, consent, unsubscribes, suppressions), the frequency cap
    (against 200k messages already sent this week), a 10% holdout, a weighted A/B creative
    pick per customer, and the outbox rows and held-out touchpoints written; goal <= 30 s;
(b) sending 100,000 emails through real Celery workers (two worker processes consuming the
    send queue) to Postfix's smtp-sink, from the launch's commit until no message is queued
    or sending, every message `sent` with its `sent` touchpoint; goal >= 1,000 messages/s.
    Beside it, in the same run, raw smtplib loops to the same sink (one connection per
    process, prebuilt messages of the same size, as many processes as workers): the
    machine's limit, and the ratio. And where the send's CPU went, per message sent: the
    worker processes, smtp-sink, and the PostgreSQL processes of the benchmark's database,
    read from /proc. CPU rather than wall time does not depend on what else the machine
    runs, and its sum bounds the rate on idle CPUs.

    python bench/send.py [--customers 1000000] [--send 100000] [--workers 2] \
                         [--pool threads] [--concurrency 8] [--part all|launch|send]

Pool and concurrency: the threads pool, 8 threads per worker. A send slot spends most of
its time waiting (the SMTP round trips, pipelined where the server offers it, as smtp-sink
does; the durable commit of each message's `sending` before the provider call, which
carries the previous message's `sent`), and threads overlap those waits at a few MB each.
Prefork would give each slot a process of its own (~80 MB) to wait in. `--pool prefork`
and `--concurrency` measure those choices (16 threads per worker measured no better).

It starts the PostgreSQL server of bench/ingest.py (the machine's binaries, its
production-style settings, data in var/bench-pg, port 5499; an already running one is
used as it is) and uses a database of its own (send_bench), or BENCH_DATABASE_URL. It
starts a redis-server of its own on a free port (the broker and the rate limits; the
machine's shared Redis is left alone) and smtp-sink on another (installing the Debian
package postfix if /usr/sbin/smtp-sink is missing; the postfix service is not started).
The first run generates the customers with COPY (a minute or two on 2 cores); later runs
reuse them, and each run starts from the same outbox (earlier bench messages removed).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.ingest import PY, OwnPostgres, ensure_database, log  # noqa: E402

GENERATOR_VERSION = "send-v1"
PREFIX = "bench-"  # Celery queue prefix of this benchmark
RAW_BODY = 1500  # characters: about the size of the benchmark's rendered emails (text + HTML)
SMTP_SINK = "/usr/sbin/smtp-sink"
TIMEZONES = ["America/New_York", "Europe/London", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles", ""]
# Who may not be mailed (by customer number i): the launch drops them, each with its reason.
NO_CONSENT = "mod(i, 20) = 0"
UNSUBSCRIBED = "mod(i, 50) = 1"
SUPPRESSED = "mod(i, 100) = 7"
CAPPED = "mod(i, 10) = 3"  # two messages sent this week: over a cap of 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- services ------------------------------------------------------------------------------------


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class SmtpSink:
    """Postfix's smtp-sink: accepts everything, stores nothing, counts (-c)."""

    def __init__(self) -> None:
        if not Path(SMTP_SINK).exists():
            log("installing postfix for smtp-sink (apt-get install -y postfix)")
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "postfix"],
                check=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                stdout=subprocess.DEVNULL,
            )
        self.port = free_port()
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-c", *user, f"127.0.0.1:{self.port}", "1000"], stdout=self.out, stderr=subprocess.STDOUT
        )
        time.sleep(0.3)

    def received(self) -> int:
        """Messages received so far (smtp-sink -c prints its counters as it goes)."""
        self.out.flush()
        self.out.seek(max(0, self.out.seek(0, os.SEEK_END) - 200))
        counts = re.findall(rb"(\d+)", self.out.read())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.close()


def django_env(url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CELERY_QUEUE_PREFIX": PREFIX,
        "SECRET_KEY": "bench-only",
        "ALLOWED_HOSTS": "localhost",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }


class Workers:
    def __init__(self, env: dict[str, str], count: int, pool: str, concurrency: int) -> None:
        self.procs = []
        self.logs = []
        for n in range(count):
            out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
            command = [PY, "-m", "celery", "-A", "marketing", "worker", "-Q", f"{PREFIX}send", "-n", f"send{n}@bench"]
            command += ["--pool", pool, "--concurrency", str(concurrency), "-l", "INFO"]
            command += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
            self.procs.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            self.logs.append(out)
        deadline = time.time() + 90
        while not all(b"ready." in self.output(n) for n in range(count)):
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(
                    "workers did not start:\n" + "\n".join(self.output(n)[-3000:].decode() for n in range(count))
                )
            time.sleep(0.2)

    def output(self, n: int) -> bytes:
        self.logs[n].flush()
        self.logs[n].seek(0)
        return self.logs[n].read()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, out in zip(self.procs, self.logs, strict=True):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.close()


# --- CPU accounting ----------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, float, str]]:
    """{pid: (parent pid, CPU seconds user + system, command line)} of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, command)
    return found


class CpuMeter:
    """Where the CPU of the send goes, by process group, from /proc: each worker process
    (with its children, if prefork), smtp-sink, and the PostgreSQL processes of this
    benchmark's database (its backends and autovacuum workers). Sampled every few seconds,
    so a process that ends between samples loses at most its last seconds."""

    def __init__(self, roots: dict[str, int], postmaster: int | None, database: str) -> None:
        self.roots = roots
        self.postmaster = postmaster
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def _group(self, pid: int, processes: dict) -> str | None:
        parent, _, command = processes[pid]
        for name, root in self.roots.items():
            if root in (pid, parent):
                return name
        # Its backends and autovacuum workers; not the server-wide processes (WAL writer,
        # checkpointer), which also work for whoever else uses the server.
        ours = f" {self.database} " in command or command.rstrip().endswith(f" {self.database}")
        if self.postmaster is not None and parent == self.postmaster and ours:
            return "PostgreSQL"
        return None

    def sample(self, first: bool = False) -> None:
        processes = _processes()
        for pid in processes:
            group = self._group(pid, processes)
            if group is not None:
                self.last[pid] = (group, processes[pid][1])
                if first:
                    self.first[pid] = processes[pid][1]

    def start(self) -> None:
        self.sample(first=True)

    def stop(self) -> dict[str, float]:
        self.sample()
        totals = dict.fromkeys([*self.roots, "PostgreSQL"] if self.postmaster else self.roots, 0.0)
        for pid, (group, seconds) in self.last.items():
            totals[group] += seconds - self.first.get(pid, 0.0)
        return totals


def postmaster_pid() -> int | None:
    """The bench's own PostgreSQL server's postmaster (None with BENCH_DATABASE_URL)."""
    pidfile = ROOT / "var" / "bench-pg" / "postmaster.pid"
    if os.environ.get("BENCH_DATABASE_URL") or not pidfile.exists():
        return None
    return int(pidfile.read_text().split()[0])


# --- data --------------------------------------------------------------------------------------


def generate(url: str, customers: int) -> None:
    """1M customers (COPY), the audience segments, suppressions: once per scale."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_send_state (key text PRIMARY KEY, value text)")
        state = conn.execute("SELECT value FROM bench_send_state WHERE key = 'data'").fetchone()
        wanted = f"{GENERATOR_VERSION}:{customers}"
        if state and state[0] == wanted:
            return
        log(f"generating {customers:,} customers")
        reset_outbox(url)
        conn.execute("TRUNCATE marketing_suppression, campaigns_segmentmembership, campaigns_segmentchange")
        conn.execute("DELETE FROM campaigns_segment")
        conn.execute("DELETE FROM campaigns_channel")
        conn.execute("TRUNCATE marketing_customer CASCADE")
        columns = (
            "external_id, email, phone, first_name, last_name, country, timezone, locale, attributes, email_opt_in, "
            "email_opt_in_source, sms_opt_in, sms_opt_in_source, push_opt_in, push_opt_in_source, is_stub, "
            "unsubscribed_at"
        )
        names = ["Ada", "Grace", "Linus", "Ken", "Barbara", "Alan", "Margaret", "Dennis"]
        unsubscribed = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        with conn.cursor() as cur, cur.copy(f"COPY marketing_customer ({columns}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for i in range(1, customers + 1):
                buffer.write(
                    f"sb-{i}\tc{i}@example.com\t\t{names[i % 8]}\tTester\tUS\t{TIMEZONES[i % 6]}\ten-US\t"
                    f'{{"tier": "{("gold", "silver", "bronze")[i % 3]}"}}\t{"f" if i % 20 == 0 else "t"}\tbench\t'
                    f"f\t\tf\t\tf\t{unsubscribed if i % 50 == 1 else chr(92) + 'N'}\n"
                )
                if i % 100_000 == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        conn.execute(
            f"INSERT INTO marketing_suppression (kind, value, reason, note, created_at) "
            f"SELECT 'email', 'c' || i || '@example.com', 'hard_bounce', 'bench', now() "
            f"FROM generate_series(1, %s) i WHERE {SUPPRESSED}",
            [customers],
        )
        conn.execute(
            "INSERT INTO bench_send_state VALUES ('data', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            [wanted],
        )
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE marketing_customer")
        conn.execute("VACUUM ANALYZE marketing_suppression")


def reset_outbox(url: str) -> None:
    """Every run starts from the same outbox: no messages but the capping history."""
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE campaigns_message, marketing_touchpoint")
        conn.execute("DELETE FROM campaigns_campaignrun")
        conn.execute("DELETE FROM campaigns_creative")
        conn.execute("DELETE FROM campaigns_campaign_audience")
        conn.execute("DELETE FROM campaigns_campaign_exclusions")
        conn.execute("DELETE FROM campaigns_campaign")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE campaigns_message")


# --- in Django ---------------------------------------------------------------------------------


def setup_django(url: str, redis_url: str) -> None:
    os.environ.update(django_env(url, redis_url))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketing.settings")
    import django

    django.setup()


def segment_of(name: str, where: str, customers: int):
    """A static segment of the customers sb-<i> for which `where` holds (SQL on i)."""
    from django.db import connection

    from campaigns.models import Segment

    segment, created = Segment.objects.get_or_create(name=name, defaults={"kind": Segment.Kind.STATIC})
    if created or not segment.member_count:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO campaigns_segmentmembership (segment_id, customer_id, since) "
                "SELECT %s, c.id, now() FROM marketing_customer c "
                "CROSS JOIN LATERAL (SELECT substr(c.external_id, 4)::int AS i) n "
                f"WHERE c.external_id LIKE 'sb-%%' AND n.i <= %s AND ({where}) ON CONFLICT DO NOTHING",
                [segment.pk, customers],
            )
            segment.member_count = cursor.rowcount
            segment.save(update_fields=["member_count"])
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE campaigns_segmentmembership")
    return segment


def email_channel(name: str, port: int):
    from campaigns.models import Channel

    channel, _ = Channel.objects.update_or_create(
        name=name,
        defaults={
            "kind": "email",
            "backend": "smtp",
            "settings": {"host": "127.0.0.1", "port": port, "timeout": 10, "from_email": "News <news@example.com>"},
            "cost_per_message": "0.0008",
            "enabled": True,
        },
    )
    return channel


def new_campaign(name: str, segment, channel, **fields):
    from campaigns.models import Campaign, Creative

    campaign = Campaign.objects.create(name=name, channel_policy={"type": "fixed", "channel": channel.pk}, **fields)
    campaign.audience.add(segment)
    for variant, subject in (("A", "{{ first_name }}, 20% off for {{ attributes.tier }} members"), ("B", "Sale!")):
        Creative.objects.create(
            campaign=campaign,
            channel_kind="email",
            name=variant,
            subject=subject,
            body="Hi {{ first_name }},\n\nOur sale: https://shop.example.com/sale?c={{ external_id }}\n",
            html_body='<p>Hi {{ first_name }},</p><p><a href="https://shop.example.com/sale">Shop now</a></p>',
        )
    return campaign


def capping_history(customers: int) -> None:
    """Two messages sent this week to 10% of the customers (another campaign's)."""
    from django.db import connection

    from campaigns.models import Campaign, CampaignRun, Channel

    channel = Channel.objects.get(name="bench history")
    campaign = Campaign.objects.create(name="bench: last week's newsletter", status=Campaign.Status.COMPLETED)
    runs = [CampaignRun.objects.create(campaign=campaign, key=f"week-{n}") for n in (1, 2)]
    with connection.cursor() as cursor:
        for n, run in enumerate(runs):
            cursor.execute(
                "INSERT INTO campaigns_message (campaign_id, run_id, customer_id, channel_id, status, not_before, "
                "claimed_by, policy, features, attempts, recipient, provider_id, error, created_at, updated_at, "
                "sent_at) "
                "SELECT %s, %s, c.id, %s, 'sent', now(), '', 'fixed', '{}', 1, c.email, '', '', now(), now(), "
                "now() - make_interval(days => %s) FROM marketing_customer c "
                "CROSS JOIN LATERAL (SELECT substr(c.external_id, 4)::int AS i) n "
                f"WHERE c.external_id LIKE 'sb-%%' AND n.i <= %s AND {CAPPED}",
                [campaign.pk, run.pk, channel.pk, n + 1, customers],
            )
        cursor.execute("ANALYZE campaigns_message")


def bench_launch(customers: int, port: int) -> dict:
    from campaigns.delivery.launch import run_launch

    segment = segment_of("bench: everyone", "true", customers)
    channel = email_channel("bench email", port)
    email_channel("bench history", port)
    capping_history(customers)
    campaign = new_campaign(
        "bench: 1M launch", segment, channel, holdout_percent=10, frequency_cap=2, frequency_cap_days=7
    )
    started = time.perf_counter()
    run = run_launch(campaign.pk, "launch")
    elapsed = time.perf_counter() - started
    # Its messages are never sent (the campaign stays a draft); the outbox is reset after.
    return {"elapsed": elapsed, "counts": run.counts, "audience": segment.member_count}


def bench_send(n: int, customers: int, sink: SmtpSink, env: dict, args) -> dict:
    from django.db.models import Count

    from campaigns.delivery.control import campaign_launch
    from campaigns.delivery.sweeper import sweep
    from campaigns.models import Message
    from marketing.models import Touchpoint

    eligible = f"NOT ({NO_CONSENT}) AND NOT ({UNSUBSCRIBED}) AND NOT ({SUPPRESSED})"
    # The last eligible customers, so they are not those (a) capped.
    segment = segment_of(f"bench: send {n}", f"{eligible} AND NOT ({CAPPED}) AND i > {customers - 2 * n}", customers)
    if segment.member_count < n:
        raise SystemExit(f"the send segment has {segment.member_count} members, fewer than {n}")
    channel = email_channel("bench email", sink.port)
    campaign = new_campaign(f"bench: send {n}", segment, channel, holdout_percent=0)
    from campaigns.models import SegmentMembership

    # Exactly n members: the last n.
    extra = SegmentMembership.objects.filter(segment=segment).order_by("-customer_id").values_list("id", flat=True)[n:]
    SegmentMembership.objects.filter(id__in=list(extra)).delete()
    segment.member_count = n
    segment.save(update_fields=["member_count"])

    workers = Workers(env, args.workers, args.pool, args.concurrency)
    roots = {f"worker {i}": proc.pid for i, proc in enumerate(workers.procs)}
    database = urlparse(os.environ["DATABASE_URL"]).path.lstrip("/")
    meter = CpuMeter({**roots, "smtp-sink": sink.proc.pid}, postmaster_pid(), database)
    try:
        log(f"launching {n:,} messages; {args.workers} workers ({args.pool}, concurrency {args.concurrency})")
        launch_started = time.perf_counter()
        run = campaign_launch(campaign.pk)  # commits the outbox, then enqueues send_due tasks
        meter.start()
        started = time.perf_counter()
        queued = run.counts["queued"]
        pending = Message.objects.filter(campaign=campaign, status__in=["queued", "sending"])
        next_sweep = started + 10
        next_sample = started + 2
        next_look = started + 1
        at_sink = sink.received()
        while True:
            now = time.perf_counter()
            # Asking the outbox is itself a scan of the campaign's index past every row
            # already sent (a few ms at 100k): once a second, and every 0.2 s only once
            # smtp-sink has counted them all (when the end must be near).
            if now >= next_look or sink.received() - at_sink >= queued:
                if not pending.exists():
                    break
                next_look = now + 1
            if now >= next_sweep:  # as beat runs it in production, every 10 s
                sweep()
                next_sweep += 10
            if now >= next_sample:
                meter.sample()
                next_sample += 2
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        workers.stop()
    statuses = dict(Message.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")))
    touchpoints = Touchpoint.objects.filter(campaign_id=campaign.pk, kind="sent").count()
    return {
        "queued": queued,
        "launch": started - launch_started,
        "elapsed": elapsed,
        "cpu": cpu,
        "statuses": statuses,
        "touchpoints": touchpoints,
    }


# --- the raw loop ------------------------------------------------------------------------------


def _raw_loop(port: int, count: int, size: int, results) -> None:
    message = EmailMessage()
    message["From"] = "News <news@example.com>"
    message["To"] = "c1@example.com"
    message["Subject"] = "Sale!"
    message.set_content("x" * size)
    data = message.as_bytes()
    smtp = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for i in range(count):
        smtp.sendmail("news@example.com", [f"c{i}@example.com"], data)
    results.put(time.perf_counter() - started)
    smtp.quit()


def raw_rate(port: int, processes: int, per_process: int, size: int) -> float:
    results = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_raw_loop, args=(port, per_process, size, results)) for _ in range(processes)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return processes * per_process / (time.perf_counter() - started)


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--send", type=int, default=100_000, help="emails sent in (b)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    parser.add_argument("--concurrency", type=int, default=8, help="slots per worker")
    parser.add_argument("--raw", type=int, default=20_000, help="messages per raw smtplib process")
    parser.add_argument("--part", default="all", choices=["all", "launch", "send"])
    parser.add_argument("--pg-port", type=int, default=5499)
    args = parser.parse_args()

    own = None
    if os.environ.get("BENCH_DATABASE_URL"):
        url = os.environ["BENCH_DATABASE_URL"]
    else:
        own = OwnPostgres(args.pg_port)
        running = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(args.pg_port)]).returncode == 0
        base = f"postgres://postgres@127.0.0.1:{args.pg_port}/marketing_bench" if running else own.start()
        url = urlparse(base)._replace(path="/send_bench").geturl()
        if running:
            own = None  # someone else's run: leave it running
    redis = Redis()
    sink = SmtpSink()
    try:
        ensure_database(url)
        generate(url, args.customers)
        reset_outbox(url)
        setup_django(url, redis.url)
        results = run(url, redis, sink, args)
        report(url, args, results)
    finally:
        sink.stop()
        redis.stop()
        if own:
            own.stop()


def run(url: str, redis: Redis, sink: SmtpSink, args) -> dict:
    results: dict = {}
    if args.part in ("all", "launch"):
        log(f"(a) launching a campaign to {args.customers:,} customers")
        results["launch"] = bench_launch(args.customers, sink.port)
        reset_outbox(url)
    if args.part in ("all", "send"):
        log(f"(b) raw smtplib loops: {args.workers} processes x {args.raw:,} messages")
        results["raw"] = raw_rate(sink.port, args.workers, args.raw, RAW_BODY)
        results["raw1"] = raw_rate(sink.port, 1, args.raw, RAW_BODY)
        # (b) starts from the same state with or without (a) before it: (a)'s gigabyte of
        # writes checkpointed and flushed from the OS's cache, not competing with (b)'s commits.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        os.sync()
        before = sink.received()
        results["send"] = bench_send(args.send, args.customers, sink, django_env(url, redis.url), args)
        time.sleep(0.5)
        results["send"]["sink"] = sink.received() - before
    return results


def report(url: str, args, results: dict) -> None:
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings_line = ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("shared_buffers", "max_wal_size", "synchronous_commit")
        )
    print(f"PostgreSQL {version}: {settings_line}; {os.cpu_count()} CPUs")
    if "launch" in results:
        a = results["launch"]
        verdict = "ok" if a["elapsed"] <= 30 else "OVER the 30 s goal"
        print(
            f"(a) launch to {a['audience']:,} customers (selection, 10% holdout, cap 2/7 days, A/B picks, outbox): "
            f"{a['elapsed']:.1f} s [{verdict}]; counts {a['counts']}"
        )
    if "send" in results:
        b = results["send"]
        rate = b["statuses"].get("sent", 0) / b["elapsed"]
        verdict = "ok" if rate >= 1000 else "UNDER the 1,000/s goal"
        print(
            f"(b) {b['queued']:,} emails through {args.workers} Celery workers ({args.pool}, concurrency "
            f"{args.concurrency}) to smtp-sink: {rate:,.0f} messages/s ({b['elapsed']:.1f} s after a "
            f"{b['launch']:.1f} s launch) [{verdict}]; statuses {b['statuses']}; sent touchpoints "
            f"{b['touchpoints']:,}; smtp-sink counted {b['sink']:,}"
        )
        print(
            f"    raw smtplib loop to the same sink, {args.workers} processes: {results['raw']:,.0f} messages/s -> "
            f"ratio {rate / results['raw']:.2f}; 1 process: {results['raw1']:,.0f} messages/s -> ratio "
            f"{rate / results['raw1']:.2f}"
        )
        sent = max(b["statuses"].get("sent", 0), 1)
        per_message = {name: 1e6 * seconds / sent for name, seconds in b["cpu"].items()}
        total = sum(per_message.values())
        cpus = os.cpu_count() or 1
        # CPU rather than wall time: what the run costs however busy the machine was.
        print(
            "    CPU per message sent: "
            + ", ".join(f"{name} {us:,.0f} us" for name, us in per_message.items())
            + f"; {total:,.0f} us in all, so at most {cpus * 1e6 / total:,.0f} messages/s on {cpus} idle CPUs"
            + f" (used {sum(b['cpu'].values()) / b['elapsed']:.2f} CPUs on average)"
        )


if __name__ == "__main__":
    main()
