"""/api/v1/ routes of the campaigns layer, with and without a trailing slash (as
marketing's)."""

from rest_framework.routers import SimpleRouter

from campaigns.api import SegmentViewSet


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")

urlpatterns = router.urls
