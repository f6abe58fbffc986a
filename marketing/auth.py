"""API keys for integrations: authentication, permission and per-key rate limits.

A request sends `Authorization: Token <key>` (or `Bearer <key>`). The key is 32 random
bytes; we store only its SHA-256, so a lookup is one indexed equality and no slow password
hash sits in the hot path of a 60,000-rows-per-second ingest.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling

from marketing.models import ApiKey

KEYWORDS = {b"token", b"bearer"}
# Writing last_used_at on every request would turn each read into a write; once a minute
# is enough to tell a marketer which integrations are alive.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class IntegrationUser:
    """The request.user of an API-key request: authenticated, but not a Django user, so it
    can never reach the admin."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.pk = None
        self.username = f"integration:{api_key.name}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in KEYWORDS:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send 'Authorization: Token <key>' with exactly one key.")
        try:
            raw_key = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The API key contains invalid characters.") from None
        api_key = ApiKey.objects.filter(key_sha256=hash_key(raw_key)).first()
        if api_key is None:
            raise exceptions.AuthenticationFailed("Unknown API key.")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return IntegrationUser(api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Token realm="api"'


class IsIntegrationOrStaff(permissions.BasePermission):
    """An integration's API key, or a staff member logged in to the admin (for the docs
    page's "try it out")."""

    message = "Authentication required: send 'Authorization: Token <key>'."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.is_active)


class ApiKeyRateThrottle(throttling.BaseThrottle):
    """A fixed one-minute window per key, counted with an atomic cache increment (Redis in
    production), so every web process shares the same count."""

    def allow_request(self, request, view) -> bool:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        if api_key is None:
            return True  # staff sessions are people, not integrations
        limit = api_key.rate_limit_per_minute or settings.API_RATE_LIMIT_PER_MINUTE
        now = time.time()
        window = int(now // 60)
        key = f"ratelimit:apikey:{api_key.pk}:{window}"
        cache.add(key, 0, timeout=120)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=120)
            count = 1
        self._wait = 60 - (now % 60)
        return count <= limit

    def wait(self) -> float:
        return getattr(self, "_wait", 60.0)
