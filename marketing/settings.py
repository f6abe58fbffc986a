"""Settings, all from environment variables (see .env.example for every one).

With nothing set: SQLite, an embedded (filesystem) Celery broker and DEBUG on localhost,
so web, worker and beat run on a fresh machine with nothing else installed.
With DATABASE_URL / REDIS_URL: PostgreSQL (psycopg 3) and Redis, DEBUG off, and
SECRET_KEY / ALLOWED_HOSTS required.

`manage.py test` picks its own services: TEST_DATABASE_URL / TEST_REDIS_URL when set,
else a local PostgreSQL and Redis when they answer, else SQLite and no Redis (the tests
that need them are skipped and the runner says which and why).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from marketing.envtools import env_bool, env_int, env_list, env_rates, env_str, tcp_reachable

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

TESTING = len(sys.argv) > 1 and sys.argv[1] == "test"

DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")

if TESTING:
    # The tests never touch a developer's own data: their database is Django's test_*
    # copy, their Redis database is a separate one, their queues carry a prefix.
    DATABASE_URL = env_str("TEST_DATABASE_URL", DATABASE_URL)
    if DATABASE_URL == "sqlite":  # force the SQLite fallback, e.g. to test it beside PostgreSQL
        DATABASE_URL = ""
    elif not DATABASE_URL:
        local_pg = "postgres://postgres@127.0.0.1:5432/postgres"
        DATABASE_URL = local_pg if tcp_reachable(local_pg, 5432) else ""
    # An explicit TEST_REDIS_URL (CI sets one) is used as given, so a Redis that is down
    # fails loudly; only the default is probed and dropped when nothing answers.
    REDIS_URL = env_str("TEST_REDIS_URL")
    if REDIS_URL == "none":
        REDIS_URL = ""
    elif not REDIS_URL:
        local_redis = "redis://127.0.0.1:6379/15"
        REDIS_URL = local_redis if tcp_reachable(local_redis, 6379) else ""

EMBEDDED = not DATABASE_URL and not REDIS_URL
DEBUG = env_bool("DEBUG", EMBEDDED and not TESTING)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = "insecure-local-development-key-never-use-in-production"
    else:
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (set it in the environment)")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG or TESTING else [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when DEBUG is off (comma-separated host names)")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    # Layers, bottom to top: each may import the ones above it in this list, never below.
    "marketing",
    "mlcore",
    "campaigns",
    "analytics",
]

MIDDLEWARE = [
    "marketing.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "marketing.urls"
WSGI_APPLICATION = "marketing.wsgi.application"
APPEND_SLASH = False  # API paths answer with and without the slash; no POST-losing redirects

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=600, conn_health_checks=True)}
    if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
        raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgres://user@host:5432/name)")
    DATABASES["default"].setdefault("OPTIONS", {})
    if env_str("TEST_DB_NAME"):  # lets parallel checkouts run their suites side by side
        DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DB_NAME")}
    # A runaway query must not hold a web worker forever; reports raise it per query.
    DATABASES["default"]["OPTIONS"].setdefault(
        "options", f"-c statement_timeout={env_int('DB_STATEMENT_TIMEOUT_MS', 120_000)}"
    )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "marketing.sqlite3")),
            # WAL lets the web process read while the worker writes.
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "timeout": 20},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; tests

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # storage is UTC; reports use REPORTING_TIMEZONE
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG or TESTING
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if not DEBUG and not TESTING:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- The marketing domain -------------------------------------------------------------

REPORTING_CURRENCY = env_str("REPORTING_CURRENCY", "USD").upper()
REPORTING_TIMEZONE = env_str("REPORTING_TIMEZONE", "UTC")
if len(REPORTING_CURRENCY) != 3 or not REPORTING_CURRENCY.isalpha():
    raise ImproperlyConfigured(f"REPORTING_CURRENCY={REPORTING_CURRENCY!r} is not an ISO 4217 code such as USD")
try:
    ZoneInfo(REPORTING_TIMEZONE)
except (ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"REPORTING_TIMEZONE={REPORTING_TIMEZONE!r} is not an IANA timezone") from None
# Revenue in another currency is converted with these rates or rejected with a clear error.
CURRENCY_RATES = env_rates("CURRENCY_RATES")
# Report runs (analytics.reports): a succeeded run answers again for this long; each
# computation's statement timeout; what is computed in the request rather than queued (ROI
# of campaigns with at most this many messages, funnels and attribution over at most this
# many days); campaigns the nightly refresh still measures after they finished.
REPORT_CACHE_SECONDS = env_int("REPORT_CACHE_SECONDS", 3600)
REPORT_STATEMENT_TIMEOUT_MS = env_int("REPORT_STATEMENT_TIMEOUT_MS", 600_000)
REPORT_SYNC_MAX_MESSAGES = env_int("REPORT_SYNC_MAX_MESSAGES", 100_000)
REPORT_SYNC_MAX_DAYS = env_int("REPORT_SYNC_MAX_DAYS", 31)
# Connections one report may use at once (PostgreSQL): a campaign's ROI is split by
# customer into this many parts that run in parallel on one snapshot (analytics.db.run_parts).
# 1 = one connection. Up to the database server's cores, less what else it must serve.
REPORT_PARALLELISM = env_int("REPORT_PARALLELISM", 2)
if REPORT_PARALLELISM < 1:
    raise ImproperlyConfigured(f"REPORT_PARALLELISM={REPORT_PARALLELISM} must be 1 or more")
REPORT_NIGHTLY_RECENT_DAYS = env_int("REPORT_NIGHTLY_RECENT_DAYS", 30)

BULK_MAX_BYTES = env_int("BULK_MAX_BYTES", 16 * 1024 * 1024)
BULK_MAX_ROWS = env_int("BULK_MAX_ROWS", 10_000)
# Django would answer a large body with its own 400 first; the API middleware answers 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = BULK_MAX_BYTES
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 1200)

# --- REST API -------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "marketing.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["marketing.auth.IsIntegrationOrStaff"],
    "DEFAULT_THROTTLE_CLASSES": ["marketing.auth.ApiKeyRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "marketing.api_common.IdCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "marketing.api_common.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Marketing automation API",
    "DESCRIPTION": (
        "Upsert customers, stream touchpoints, manage products. Authenticate with "
        "`Authorization: Token <key>` (or `Bearer <key>`); create keys with "
        "`python manage.py create_api_key NAME`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "marketing.api_common.schema_paths_without_trailing_slash",
    ],
    # Choice sets whose field names ("kind", "status") other components use for other
    # choices: each gets a name of its own (dotted strings: settings import no app).
    "ENUM_NAME_OVERRIDES": {
        "SegmentKindEnum": "campaigns.models.Segment.Kind",
        "ChannelKindEnum": "campaigns.models.ChannelKind",
        "CampaignStatusEnum": "campaigns.models.Campaign.Status",
        "CampaignRunStatusEnum": "campaigns.models.CampaignRun.Status",
        "MessageStatusEnum": "campaigns.models.Message.Status",
        "ReportRunStatusEnum": "analytics.models.ReportRun.Status",
    },
}

# --- Celery ---------------------------------------------------------------------------

CELERY_QUEUE_PREFIX = env_str("CELERY_QUEUE_PREFIX", "test-" if TESTING else "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # Redis redelivers an unacked task after this; our tasks are idempotent anyway.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    _broker_dir = VAR_DIR / "celery-broker"
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's default is ./control, relative to wherever the worker was started.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = not REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_QUEUES = [
    Queue(f"{CELERY_QUEUE_PREFIX}{name}", routing_key=f"{CELERY_QUEUE_PREFIX}{name}")
    for name in ("default", "send", "gpu")
]
CELERY_TASK_DEFAULT_QUEUE = f"{CELERY_QUEUE_PREFIX}default"
CELERY_TASK_ROUTES = {
    "campaigns.tasks.send_*": {"queue": f"{CELERY_QUEUE_PREFIX}send"},
    "mlcore.tasks.train_*": {"queue": f"{CELERY_QUEUE_PREFIX}gpu"},
}
# Periodic tasks live in django-celery-beat's tables, created by data migrations from
# marketing/schedules.py (and the like in higher apps), so admin edits survive restarts.
CELERY_BEAT_SCHEDULE: dict = {}

# --- delivery (campaigns.delivery) -------------------------------------------------------
# The public address of this installation: tracking links, the open pixel and unsubscribe
# URLs in messages point here.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Email: Django's backends. Embedded default: messages written as files to var/sent-mail
# (open them to see what the demo sent); set EMAIL_HOST for SMTP, or EMAIL_BACKEND to any
# backend (e.g. anymail.backends.mailgun.EmailBackend with its ANYMAIL settings).
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.filebased.EmailBackend",
)
EMAIL_FILE_PATH = str(VAR_DIR / "sent-mail")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "marketing@localhost")
# django-anymail's settings from ANYMAIL_<NAME> variables, e.g. ANYMAIL_MAILGUN_API_KEY.
ANYMAIL = {name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")}
# Sending (campaigns.delivery.send). A send_due task claims up to SEND_BATCH_SIZE due
# messages for SEND_CLAIM_LEASE_SECONDS (renewed while it works through them; the claims of
# a killed worker free themselves after that) and sends them one at a time. A message is
# `sending` for at most SEND_LEASE_SECONDS; after that the sweeper reconciles it, so the
# lease must outlast the slowest provider call (EMAIL_TIMEOUT, an HTTP channel's timeout_s).
SEND_BATCH_SIZE = env_int("SEND_BATCH_SIZE", 500)
SEND_CLAIM_LEASE_SECONDS = env_int("SEND_CLAIM_LEASE_SECONDS", 120)
SEND_LEASE_SECONDS = env_int("SEND_LEASE_SECONDS", 300)
if SEND_LEASE_SECONDS <= EMAIL_TIMEOUT:
    raise ImproperlyConfigured(f"SEND_LEASE_SECONDS={SEND_LEASE_SECONDS} must exceed EMAIL_TIMEOUT={EMAIL_TIMEOUT}")
# One sweep enqueues at most this many send_due tasks per channel (each task that claimed a
# full batch enqueues its own successor, so a big campaign keeps flowing between sweeps).
SEND_MAX_TASKS_PER_CHANNEL = env_int("SEND_MAX_TASKS_PER_CHANNEL", 16)
# A `sending` message whose channel's status API has not answered this long after its lease
# expired becomes `unknown`.
SEND_RECONCILE_GIVE_UP_SECONDS = env_int("SEND_RECONCILE_GIVE_UP_SECONDS", 3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Tests send bad input on purpose; its 4xx warnings would bury the runner's report.
        "django.request": {"level": "ERROR" if TESTING else "WARNING"},
    },
}

TEST_RUNNER = "tests.runner.ReportingTestRunner"
