"""Root URLs. Higher apps are wired by dotted string (include("campaigns.urls")), so this
bottom-layer module imports nothing above it."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="api-schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/redoc/?$", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("api/v1/", include("marketing.api_urls")),
    path("api/v1/", include("mlcore.urls")),
    path("api/v1/", include("campaigns.urls")),
    path("api/v1/", include("analytics.urls")),
    path("", include("campaigns.tracking_urls")),
]
