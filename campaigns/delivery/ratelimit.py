"""Per-channel rate limits shared by every worker: a GCRA ("generic cell rate algorithm")
reservation in Redis, one key per channel.

`reserve(channel_id, per_second)` books the next free slot of the channel and returns how
long the caller must wait for it (0 when it may go now). Booking rather than polling: a
worker that waits already owns its slot, so the workers of a busy channel share it fairly
without retry storms, and the channel's rate holds however many workers send. A channel
may burst by a tenth of a second's worth of messages (at least one), so in any window of
w seconds at most `burst + w * per_second` messages go: providers that count per second
see about their limit, never twice it.

The clock is Redis's (TIME inside the script), so workers on hosts whose clocks differ
still share one schedule. Without Redis (the embedded mode, one worker process) or while
Redis is unreachable, the same algorithm runs in process memory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

# KEYS[1]: the channel's key. ARGV[1]: microseconds between messages; ARGV[2]: burst
# tolerance in microseconds. Returns the wait in microseconds. The key holds the
# "theoretical arrival time" of the next message and expires once it is in the past.
_GCRA = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1000)
return wait
"""


def _parameters(per_second: float) -> tuple[int, int]:
    interval = 1_000_000 / per_second
    burst = max(1, int(per_second // 10))
    return int(interval), int((burst - 1) * interval)


class LocalLimiter:
    """The same reservation in process memory (monotonic clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def reserve(self, key: str, per_second: float) -> float:
        interval, tolerance = (value / 1_000_000 for value in _parameters(per_second))
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat.get(key, 0.0), now)
            self._tat[key] = tat + interval
            return max(0.0, tat - tolerance - now)


_local = LocalLimiter()
_redis_script = None
_redis_lock = threading.Lock()


def _script():
    global _redis_script
    with _redis_lock:
        if _redis_script is None:
            import redis

            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            # Script.__call__ uses EVALSHA and reloads the script after a Redis restart.
            _redis_script = client.register_script(_GCRA)
        return _redis_script


def channel_key(channel_id: int) -> str:
    # The queue prefix keeps a test run's limits apart from a developer's running workers.
    return f"{settings.CELERY_QUEUE_PREFIX}ratelimit:channel:{channel_id}"


def reserve(channel_id: int, per_second: float | None) -> float:
    """Book the channel's next slot; the seconds to wait before sending (0: go now)."""
    if not per_second:
        return 0.0
    key = channel_key(channel_id)
    if settings.REDIS_URL:
        import redis

        interval, tolerance = _parameters(per_second)
        try:
            return int(_script()(keys=[key], args=[interval, tolerance])) / 1_000_000
        except redis.RedisError as exc:
            # Keep sending at the channel's rate from this process rather than not at all;
            # several processes may then exceed it together until Redis is back.
            logger.warning("rate limit of channel %s: Redis unavailable (%s); limiting in process", channel_id, exc)
    return _local.reserve(key, per_second)


def reset(channel_id: int) -> None:
    """Forget the channel's schedule (tests, or after changing its rate)."""
    key = channel_key(channel_id)
    _local._tat.pop(key, None)
    if settings.REDIS_URL:
        import redis

        with contextlib.suppress(redis.RedisError):
            _script().registered_client.delete(key)
