"""Delivery: from a campaign to messages in customers' inboxes and back (issue 4).

The pieces, each a module with plain functions that views, the admin and Celery tasks call:

- `launch`: a campaign run selects its audience in SQL (segment memberships minus
  exclusions), drops who must not or cannot be reached (no consent for the channel,
  unsubscribed, suppressed, no address/number/device, over the frequency cap), assigns the
  holdout by `holdout` hashing, lets the campaign's `policies` pick channel and creative per
  customer (vectorised; the probability of the pick and the features are logged), and
  writes the outbox (Message rows, one per customer and run: queued, held_out or
  suppressed with the reason) and the held_out touchpoints in bulk. Idempotent per
  (campaign, run key).
- `send`: Celery tasks on the `send` queue claim due queued messages with a lease (FOR
  UPDATE SKIP LOCKED), then per message commit `sending` before the provider call and
  `sent` (with a `sent` touchpoint) after it; transient failures go back to `queued` with a
  backoff `not_before` (`timing`), permanent ones fail, hard bounces and complaints
  suppress. Quiet hours defer through `not_before` (`timing`). Per-channel rate limits
  (`ratelimit`) are shared by all workers through Redis.
- `backends`: email through Django email backends (SMTP with connection reuse, or any
  django-anymail provider), SMS/push/webhook through a configurable JSON-over-HTTP provider.
- `sweeper`: a beat task that re-enqueues due work (correctness never rests on Celery
  redelivery) and reconciles `sending` messages whose lease expired: through the
  provider's idempotency key or status API where there is one, else `unknown` (never
  re-sent blindly).
- `render` and `tracking`: creatives rendered from a prepared context with signed click
  links, an open pixel and RFC 8058 List-Unsubscribe headers; the endpoints that turn
  opens, clicks, unsubscribes, provider webhooks and inbound SMS STOP into touchpoints.
"""
