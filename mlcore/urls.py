"""/api/v1/ routes of the mlcore layer, with and without a trailing slash (as marketing's)."""

from marketing.api_urls import OptionalSlashRouter
from mlcore.api import AssociationRuleViewSet, ModelVersionViewSet

router = OptionalSlashRouter()
router.register("association-rules", AssociationRuleViewSet, basename="association-rule")
router.register("model-versions", ModelVersionViewSet, basename="model-version")

urlpatterns = router.urls
