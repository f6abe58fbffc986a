"""Public, unauthenticated endpoints at the site root: the links inside messages (open
pixel, click redirect, unsubscribe) and the providers' webhooks. Included from
marketing/urls.py by dotted string, so the bottom layer imports nothing of campaigns."""

from django.urls import path

from campaigns.delivery import tracking

urlpatterns = [
    path("t/o/<str:token>.gif", tracking.open_pixel, name="tracking-open"),
    path("t/c/<str:token>", tracking.click, name="tracking-click"),
    path("u/<str:token>", tracking.unsubscribe, name="unsubscribe"),
    path("hooks/<int:channel_id>/events", tracking.provider_events, name="hooks-events"),
    path("hooks/<int:channel_id>/inbound", tracking.inbound_sms, name="hooks-inbound"),
]
