"""/api/v1/ routes of the marketing layer. Every path answers with and without a trailing
slash."""

urlpatterns: list = []
