"""/api/v1/ routes of the marketing layer. Every path answers with and without a trailing
slash: integrations differ, and APPEND_SLASH's redirect would lose a POST body."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from marketing.api import CustomerViewSet, HealthView, ProductViewSet, TouchpointViewSet


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("customers", CustomerViewSet, basename="customer")
router.register("touchpoints", TouchpointViewSet, basename="touchpoint")
router.register("products", ProductViewSet, basename="product")

urlpatterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    *router.urls,
]
