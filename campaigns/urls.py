"""/api/v1/ routes of the campaigns layer, with and without a trailing slash (as
marketing's)."""

from rest_framework.routers import SimpleRouter

from campaigns.api import ClusteringViewSet, SegmentViewSet


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("clusterings", ClusteringViewSet, basename="clustering")

urlpatterns = router.urls
