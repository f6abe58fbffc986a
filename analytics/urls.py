"""/api/v1/ routes of the analytics layer (reports), with and without a trailing slash."""

from analytics.api import ReportRunViewSet, ReportViewSet
from marketing.api_urls import OptionalSlashRouter

router = OptionalSlashRouter()
# The runs first: "reports/runs/<id>" must not be read as an action of "reports".
router.register("reports/runs", ReportRunViewSet, basename="report-run")
router.register("reports", ReportViewSet, basename="report")

urlpatterns = router.urls
