"""Answers an over-large API body with a JSON 413 before anything reads or parses it."""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse({"detail": "Content-Length is not a number."}, status=400)
            limit = settings.BULK_MAX_BYTES
            if length > limit:
                return JsonResponse(
                    {
                        "detail": f"Request body is {length} bytes; the limit is {limit} bytes. Split the batch.",
                        "limit_bytes": limit,
                    },
                    status=413,
                )
        return self.get_response(request)
