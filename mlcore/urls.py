"""/api/v1/ routes of the mlcore layer, with and without a trailing slash (as marketing's).

A customer's scores and recommendations live here, not with marketing's customer routes:
they read mlcore's data, and the bottom layer imports nothing above it."""

from django.urls import re_path

from marketing.api_urls import OptionalSlashRouter
from mlcore.api import AssociationRuleViewSet, CustomerScoresView, ModelVersionViewSet
from mlcore.api_learning import CustomerRecommendationsView, PolicyEvaluationView

router = OptionalSlashRouter()
router.register("association-rules", AssociationRuleViewSet, basename="association-rule")
router.register("model-versions", ModelVersionViewSet, basename="model-version")

urlpatterns = [
    *router.urls,
    re_path(r"^customers/(?P<key>[^/]+)/scores/?$", CustomerScoresView.as_view(), name="customer-scores"),
    re_path(
        r"^customers/(?P<external_id>[^/]+)/recommendations/?$",
        CustomerRecommendationsView.as_view(),
        name="customer-recommendations",
    ),
    re_path(r"^policy-evaluations/?$", PolicyEvaluationView.as_view(), name="policy-evaluations"),
]
