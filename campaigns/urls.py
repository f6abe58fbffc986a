"""/api/v1/ routes of the campaigns layer, with and without a trailing slash (as
marketing's)."""

from rest_framework.routers import SimpleRouter

from campaigns.api import (
    CampaignViewSet,
    ChannelViewSet,
    ClusteringViewSet,
    CreativeViewSet,
    DeviceViewSet,
    MessageViewSet,
    SegmentViewSet,
)


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("segments", SegmentViewSet, basename="segment")
router.register("clusterings", ClusteringViewSet, basename="clustering")
router.register("channels", ChannelViewSet, basename="channel")
router.register("devices", DeviceViewSet, basename="device")
router.register("campaigns", CampaignViewSet, basename="campaign")
router.register("creatives", CreativeViewSet, basename="creative")
router.register("messages", MessageViewSet, basename="message")

urlpatterns = router.urls
