"""The admin for marketers: customers (search, filters, timeline and order stats, CSV
import and export, GDPR erase), the touchpoint log (read-only), products, suppressions,
integration API keys and worker heartbeats.

Customers reach millions of rows and touchpoints billions, so every list here stays on
indexes: counts are capped (no COUNT(*) over the table on each page view), filters offer
their choices without scanning the table, searches are index lookups, and the customer
list shows only the customer's own columns (no per-row query into the touchpoint log).
Writes go through the services (ingest, erase, API keys); the admin only calls them.
"""

from __future__ import annotations

import json
import secrets
import zlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from marketing import csv_io
from marketing.api_common import is_id
from marketing.errors import BatchInvalid, DomainError, RowError
from marketing.forms import ApiKeyAddForm, CsvConfirmForm, CsvImportForm, CustomerForm, SuppressionForm
from marketing.ingest import customers_bulk_upsert, customers_validate
from marketing.models import ApiKey, Customer, Product, Suppression, Touchpoint, TouchpointKind, WorkerHeartbeat
from marketing.registries import customer_panels
from marketing.rfm import rfm_group
from marketing.selectors import customer_order_stats

admin.site.site_header = "Marketing automation"
admin.site.site_title = "Marketing automation"
admin.site.index_title = "Customers, campaigns and reports"

TIMELINE_LIMIT = 50
MAX_ERASE_PER_ACTION = 500
MAX_SHOWN_IMPORT_ERRORS = 1000
IMPORT_PREVIEW_ROWS = 20
IMPORT_TTL_SECONDS = 3600
# Channel labels are free text and have no index to list them from; these are the usual
# ones, and any other works through the URL (?channel=kiosk).
KNOWN_CHANNELS = ("email", "sms", "push", "webhook", "web", "app", "pos", "ads")
HEARTBEAT_ALIVE = timedelta(minutes=3)  # the health check runs every minute


# --- lists that stay fast on huge tables -------------------------------------------------


class CappedCountPaginator(Paginator):
    """Counts at most `cap` + 1 matching rows. An exact COUNT(*) over millions of customers
    or billions of touchpoints would cost seconds to minutes on every page view; past the
    cap the list says "more than 10,000" and pages stop there (filter or search to narrow
    it down)."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return self.object_list.order_by().values("pk")[: self.cap + 1].count()
        return len(self.object_list)

    @property
    def capped(self) -> bool:
        return self.count > self.cap


class StampUpdatedAtMixin:
    """For a model admin of a model whose `updated_at` has a database default: that
    default covers inserts only, so a change made in the admin stamps it."""

    def save_model(self, request, obj, form, change):
        if change:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


class ReadOnlyMixin:
    """For a model admin that only shows: no add, change or delete (the data is a log, or
    written by the system)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class HugeTableAdmin(admin.ModelAdmin):
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would count every filter choice
    paginator = CappedCountPaginator
    list_per_page = 100


def distinct_values(model: type, field_name: str, limit: int = 200) -> list[str]:
    """The distinct values of an indexed column, for a list filter's choices. On PostgreSQL
    a recursive "skip scan" jumps through the index once per distinct value (a few dozen
    index probes instead of reading every row); cached for a minute."""
    table = model._meta.db_table
    column = model._meta.get_field(field_name).column
    key = f"admin:distinct:{table}.{column}"
    values = cache.get(key)
    if values is None:
        if connection.vendor == "postgresql":
            t, c = connection.ops.quote_name(table), connection.ops.quote_name(column)
            sql = f"""
                WITH RECURSIVE v AS (
                    (SELECT {c} AS value FROM {t} ORDER BY {c} LIMIT 1)
                    UNION ALL
                    SELECT (SELECT {c} FROM {t} WHERE {c} > v.value ORDER BY {c} LIMIT 1)
                    FROM v WHERE v.value IS NOT NULL
                )
                SELECT value FROM v WHERE value IS NOT NULL LIMIT %s
            """
            with connection.cursor() as cursor:
                cursor.execute(sql, [limit])
                values = [value for (value,) in cursor.fetchall()]
        else:
            values = list(model.objects.order_by(field_name).values_list(field_name, flat=True).distinct()[:limit])
        values = sorted(values)
        cache.set(key, values, 60)
    return values


# --- customers ------------------------------------------------------------------------


class LastSeenFilter(admin.SimpleListFilter):
    title = "last seen"
    parameter_name = "last_seen"
    WINDOWS = {"7d": 7, "30d": 30, "90d": 90}

    def lookups(self, request, model_admin):
        return [
            ("7d", "In the last 7 days"),
            ("30d", "In the last 30 days"),
            ("90d", "In the last 90 days"),
            ("older", "More than 90 days ago"),
            ("never", "Never"),
        ]

    def queryset(self, request, queryset):
        value, now = self.value(), timezone.now()
        if value in self.WINDOWS:
            return queryset.filter(last_seen_at__gte=now - timedelta(days=self.WINDOWS[value]))
        if value == "older":
            return queryset.filter(last_seen_at__lt=now - timedelta(days=90))
        if value == "never":
            return queryset.filter(last_seen_at__isnull=True)
        return queryset


class TimestampSetFilter(admin.SimpleListFilter):
    """Yes/no on whether a timestamp column is set (erased_at, unsubscribed_at)."""

    field_name = ""

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(**{f"{self.field_name}__isnull": self.value() == "no"})
        return queryset


class ErasedFilter(TimestampSetFilter):
    title = "erased (GDPR)"
    parameter_name = "erased"
    field_name = "erased_at"


class UnsubscribedFilter(TimestampSetFilter):
    title = "unsubscribed"
    parameter_name = "unsubscribed"
    field_name = "unsubscribed_at"


class CountryFilter(admin.SimpleListFilter):
    title = "country"
    parameter_name = "country"
    NONE = "-"

    def lookups(self, request, model_admin):
        countries = [(code, code) for code in distinct_values(Customer, "country") if code]
        return [*countries, (self.NONE, "No country")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(country="" if value == self.NONE else value.upper())


def name_query(term: str) -> Q:
    """Every word is the start of the first or the last name ("ann smi" finds Ann Smith)."""
    query = Q()
    for word in term.split():
        query &= Q(first_name__istartswith=word) | Q(last_name__istartswith=word)
    return query


@admin.register(Customer)
class CustomerAdmin(HugeTableAdmin):
    form = CustomerForm
    list_display = (
        "external_id",
        "email",
        "full_name",
        "country",
        "email_opt_in",
        "sms_opt_in",
        "push_opt_in",
        "last_seen_at",
        "status",
    )
    list_display_links = ("external_id",)
    list_filter = (
        "email_opt_in",
        "sms_opt_in",
        "push_opt_in",
        CountryFilter,
        LastSeenFilter,
        UnsubscribedFilter,
        "is_stub",
        ErasedFilter,
    )
    # Only columns with an index behind them sort: any other sort reads the whole table.
    sortable_by = ("external_id", "last_seen_at")
    ordering = ("-id",)
    search_fields = ("external_id",)  # shows the search box; get_search_results does the work
    search_help_text = (
        "An email address (exact, any case), an external id (exact or its beginning), or a "
        "name (beginnings of first and last name, e.g. 'ann smi')."
    )
    actions = ("export_csv", "gdpr_erase")
    readonly_fields = (
        "email_opt_in_at",
        "email_opt_in_source",
        "sms_opt_in_at",
        "sms_opt_in_source",
        "push_opt_in_at",
        "push_opt_in_source",
        "unsubscribed_at",
        "is_stub",
        "erased_at",
        "created_at",
        "updated_at",
        "last_seen_at",
        "order_count",
        "order_revenue",
        "last_purchase",
        "rfm_scores",
        "rfm_values",
        "panels",
        "timeline",
    )
    add_fieldsets = (
        (None, {"fields": ("external_id", "email", "phone", "first_name", "last_name")}),
        ("Locale", {"fields": ("country", "timezone", "locale")}),
        ("Consent", {"fields": ("email_opt_in", "sms_opt_in", "push_opt_in", "unsubscribed")}),
        ("Attributes", {"fields": ("attributes",)}),
    )
    fieldsets = (
        (None, {"fields": ("external_id", "email", "phone", "first_name", "last_name")}),
        ("Locale", {"fields": ("country", "timezone", "locale")}),
        (
            "Consent",
            {
                "description": "Changes are recorded with their time and source (admin:<your user name>).",
                "fields": (
                    ("email_opt_in", "email_opt_in_at", "email_opt_in_source"),
                    ("sms_opt_in", "sms_opt_in_at", "sms_opt_in_source"),
                    ("push_opt_in", "push_opt_in_at", "push_opt_in_source"),
                    ("unsubscribed", "unsubscribed_at"),
                ),
            },
        ),
        ("Attributes", {"fields": ("attributes",)}),
        ("Orders", {"fields": ("order_count", "order_revenue", "last_purchase")}),
        (
            "RFM",
            {
                "description": "Recomputed nightly for every customer; scores 1-5, 5 best.",
                "fields": ("rfm_scores", "rfm_values"),
            },
        ),
        ("Predictions and recommendations", {"fields": ("panels",)}),
        ("Touchpoint timeline", {"fields": ("timeline",)}),
        ("Record", {"fields": ("is_stub", "erased_at", "created_at", "updated_at", "last_seen_at")}),
    )

    # -- list ----------------------------------------------------------------------------

    @admin.display(description="name")
    def full_name(self, obj: Customer) -> str:
        return f"{obj.first_name} {obj.last_name}".strip()

    @admin.display(description="status")
    def status(self, obj: Customer) -> str:
        if obj.erased_at is not None:
            return format_html('<strong style="color:#ba2121">ERASED</strong> {}', f"{obj.erased_at:%Y-%m-%d}")
        labels = []
        if obj.is_stub:
            labels.append("stub")
        if obj.unsubscribed_at is not None:
            labels.append("unsubscribed")
        return ", ".join(labels)

    def get_search_results(self, request, queryset, search_term):
        """Index lookups first: an email address through the Upper(email) index, an
        external id (exact or prefix) through its unique index. Only when the term is no
        external id does it look at names, which have no index and cost a scan."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            return queryset.filter(email__iexact=term), False
        by_external_id = queryset.filter(external_id__startswith=term)
        if by_external_id.exists():
            return by_external_id, False
        return queryset.filter(name_query(term)), False

    # -- change page ---------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        # The external id is the CRM's key: changing it here would detach the customer from
        # the CRM's next upsert.
        return ("external_id", *self.readonly_fields)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.erased_at is not None:
            return False  # an erased customer is a tombstone: view only
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        # Customers are never hard-deleted (touchpoints PROTECT them): "delete" is the GDPR
        # erase action, allowed to whoever holds the delete permission.
        return False

    def has_erase_permission(self, request, obj=None) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}")

    @admin.display(boolean=True, description="unsubscribed")
    def unsubscribed(self, obj: Customer) -> bool:
        return obj.unsubscribed_at is not None

    def _order_stats(self, obj: Customer) -> dict:
        # One query for the three fields that show it.
        if "_admin_order_stats" not in obj.__dict__:
            obj.__dict__["_admin_order_stats"] = customer_order_stats(obj.pk)
        return obj.__dict__["_admin_order_stats"]

    @admin.display(description="orders")
    def order_count(self, obj: Customer) -> int:
        return self._order_stats(obj)["orders"]

    @admin.display(description="revenue (net of refunds)")
    def order_revenue(self, obj: Customer) -> str:
        revenue = Decimal(self._order_stats(obj)["revenue"]).quantize(Decimal("0.01"))
        return f"{revenue:,} {settings.REPORTING_CURRENCY}"

    @admin.display(description="last purchase")
    def last_purchase(self, obj: Customer):
        return self._order_stats(obj)["last_purchase_at"] or "never"

    @admin.display(description="scores and group")
    def rfm_scores(self, obj: Customer) -> str:
        rfm = getattr(obj, "rfm", None)
        if rfm is None:
            return "not computed yet"
        if rfm.r_score is None:
            return f"no purchase as of {rfm.as_of:%Y-%m-%d}"
        group = rfm_group(rfm.r_score, rfm.f_score, rfm.m_score)
        return f"R {rfm.r_score} · F {rfm.f_score} · M {rfm.m_score} — {group}"

    @admin.display(description="values")
    def rfm_values(self, obj: Customer) -> str:
        rfm = getattr(obj, "rfm", None)
        if rfm is None or rfm.recency_days is None:
            return "-"
        monetary = Decimal(rfm.monetary).quantize(Decimal("0.01"))
        return (
            f"{rfm.recency_days} days since the last purchase, {rfm.frequency} orders, "
            f"{monetary:,} {settings.REPORTING_CURRENCY} net, as of {rfm.as_of:%Y-%m-%d}"
        )

    @admin.display(description="")
    def panels(self, obj: Customer) -> str:
        """What higher layers registered (marketing.registries.register_customer_panel)."""
        parts = [format_html("<h4>{}</h4>{}", title, render(obj)) for title, render in customer_panels()]
        return mark_safe("".join(parts)) if parts else "-"  # each part is escaped by format_html

    @admin.display(description="latest touchpoints")
    def timeline(self, obj: Customer) -> str:
        rows = list(
            Touchpoint.objects.filter(customer_id=obj.pk)
            .order_by("-occurred_at", "-id")
            .only("id", "kind", "channel", "occurred_at", "revenue", "currency", "order_id", "sku", "campaign_id")[
                : TIMELINE_LIMIT + 1
            ]
        )
        return render_to_string(
            "admin/marketing/customer/timeline.html",
            {
                "touchpoints": rows[:TIMELINE_LIMIT],
                "more": len(rows) > TIMELINE_LIMIT,
                "limit": TIMELINE_LIMIT,
                "full_list_url": reverse("admin:marketing_touchpoint_changelist") + f"?customer={obj.pk}",
                "reporting_currency": settings.REPORTING_CURRENCY,
            },
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_erase": self.has_erase_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        """Through the bulk upsert, like every other customer write: consent changes get
        their time and source, and the ingest's normalisation applies."""
        row = form.ingest_row
        if change and set(row) == {"external_id"}:
            return  # nothing changed
        customers_bulk_upsert([row], source=f"admin:{request.user.get_username()}")
        saved = Customer.objects.get(external_id=row["external_id"])
        for model_field in Customer._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(saved, model_field.attname))

    # -- GDPR erase ----------------------------------------------------------------------

    @admin.action(description="GDPR erase selected customers…", permissions=["erase"])
    def gdpr_erase(self, request, queryset):
        selected = queryset.order_by("pk")[: MAX_ERASE_PER_ACTION + 1]
        customers = list(selected)
        if len(customers) > MAX_ERASE_PER_ACTION:
            self.message_user(
                request,
                f"Select at most {MAX_ERASE_PER_ACTION} customers to erase at a time.",
                messages.ERROR,
            )
            return None
        if request.POST.get("confirm") == "yes":
            self._erase(request, customers)
            return None
        return self._erase_confirmation(request, customers, from_action=True)

    def erase_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        customer = get_object_or_404(Customer, pk=object_id)
        if not self.has_erase_permission(request):
            raise PermissionDenied
        change_url = reverse("admin:marketing_customer_change", args=[customer.pk])
        if customer.erased_at is not None:
            self.message_user(request, "This customer is already erased.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            self._erase(request, [customer])
            return HttpResponseRedirect(change_url)
        return self._erase_confirmation(request, [customer], from_action=False)

    def _erase_confirmation(self, request, customers: list[Customer], *, from_action: bool) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "GDPR erase",
            "customers": customers,
            "from_action": from_action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/marketing/customer/erase_confirmation.html", context)

    def _erase(self, request, customers: list[Customer]) -> None:
        from marketing.services import customer_erase

        erased = already = 0
        for customer in customers:
            label = str(customer)
            try:
                if customer_erase(customer):
                    erased += 1
                    self.log_change(request, customer, "GDPR erase")
                else:
                    already += 1
            except DomainError as exc:
                self.message_user(request, f"{label} was not erased: {exc.message}", messages.ERROR)
        if erased:
            self.message_user(
                request,
                f"Erased {erased} customer(s): personal data anonymised, history kept for aggregates.",
                messages.SUCCESS,
            )
        if already:
            self.message_user(request, f"{already} customer(s) were already erased.", messages.WARNING)

    # -- CSV export ----------------------------------------------------------------------

    @admin.action(description="Export selected customers as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return self._export_response(queryset)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist as it is filtered and searched right now, as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return redirect(reverse("admin:marketing_customer_changelist") + "?e=1")
        return self._export_response(changelist.queryset)

    def _export_response(self, queryset: QuerySet) -> StreamingHttpResponse:
        # Erased customers are tombstones: nothing to export, and their reserved
        # "erased:" ids would not re-import.
        queryset = queryset.filter(erased_at__isnull=True)
        response = StreamingHttpResponse(csv_io.customers_csv_stream(queryset), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="customers-{timezone.now():%Y%m%d-%H%M%S}.csv"'
        return response

    # -- CSV import ----------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="marketing_customer_import"),
            path("export/", view(self.export_view), name="marketing_customer_export"),
            path("<path:object_id>/erase/", view(self.erase_view), name="marketing_customer_erase"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_import": self.has_add_permission(request) and self.has_change_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload → validate the whole file → errors per line (nothing written) or a
        preview → confirm → one transaction. The validated rows wait server-side in the
        cache under a random token bound to the user, so the confirm step writes exactly
        what was validated and shown, never a copy sent back by the browser."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import customers from CSV",
            "batch_size": settings.BULK_MAX_ROWS,
        }
        form = CsvImportForm()
        if request.method == "POST" and "token" in request.POST:
            return self._import_confirm(request, context)
        if request.method == "POST":
            form = CsvImportForm(request.POST, request.FILES)
            if form.is_valid():
                parsed = form.parsed
                errors = parsed.errors + self._validate_import(parsed)
                if errors:
                    context.update(self._error_context(errors))
                    context["filename"] = form.cleaned_data["file"].name
                else:
                    context.update(self._preview_context(request, parsed, form.cleaned_data["file"].name))
                    form = None
        context["form"] = form
        return TemplateResponse(request, "admin/marketing/customer/import.html", context)

    @staticmethod
    def _validate_import(parsed: csv_io.ParsedCsv) -> list[RowError]:
        """The ingest validation, batch by batch as the confirmation will write them, with
        each error moved from its index in the batch to its line in the file."""
        errors = []
        for batch in csv_io.import_batches(parsed.rows, settings.BULK_MAX_ROWS):
            _, batch_errors = customers_validate([parsed.rows[index] for index in batch])
            errors.extend(_on_lines(batch_errors, parsed.lines, batch))
        return errors

    @staticmethod
    def _error_context(errors: list[RowError]) -> dict[str, Any]:
        errors = sorted(errors, key=lambda e: (e.row is None, e.row or 0))
        return {"errors": errors[:MAX_SHOWN_IMPORT_ERRORS], "error_count": len(errors)}

    def _preview_context(self, request, parsed: csv_io.ParsedCsv, filename: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        payload = {"user": request.user.pk, "filename": filename, "rows": parsed.rows, "lines": parsed.lines}
        cache.set(_import_key(token), zlib.compress(json.dumps(payload).encode()), IMPORT_TTL_SECONDS)
        external_ids = list({row["external_id"] for row in parsed.rows})
        existing = 0
        for start in range(0, len(external_ids), 10_000):
            existing += Customer.objects.filter(external_id__in=external_ids[start : start + 10_000]).count()
        return {
            "filename": filename,
            "columns": parsed.columns,
            "row_count": len(parsed.rows),
            "new_count": len(external_ids) - existing,
            "existing_count": existing,
            "preview": [
                (line, [_preview_cell(row, column) for column in parsed.columns])
                for line, row in zip(parsed.lines[:IMPORT_PREVIEW_ROWS], parsed.rows, strict=False)
            ],
            "confirm_form": CsvConfirmForm(initial={"token": token}),
        }

    def _import_confirm(self, request, context: dict[str, Any]) -> HttpResponse:
        form = CsvConfirmForm(request.POST)
        key = _import_key(form.data.get("token", ""))
        stored = cache.get(key) if form.is_valid() else None
        payload = json.loads(zlib.decompress(stored)) if stored else None
        # Deleting claims the upload: a double-clicked confirm cannot import it twice.
        if payload is None or payload["user"] != request.user.pk or not cache.delete(key):
            self.message_user(
                request, "That upload has expired or was already imported; upload the file again.", messages.ERROR
            )
            return redirect("admin:marketing_customer_import")
        rows, lines = payload["rows"], payload["lines"]
        source = f"csv:{request.user.get_username()}"[:64]
        created = updated = 0
        batch: list[int] = []
        try:
            # One transaction around every batch: a failure in any batch writes nothing.
            with transaction.atomic():
                for batch in csv_io.import_batches(rows, settings.BULK_MAX_ROWS):
                    result = customers_bulk_upsert([rows[index] for index in batch], source=source)
                    created += result.created
                    updated += result.updated
        except BatchInvalid as exc:
            context.update(self._error_context(_on_lines(exc.errors, lines, batch)))
            context["filename"] = payload["filename"]
            context["form"] = CsvImportForm()
            return TemplateResponse(request, "admin/marketing/customer/import.html", context)
        except DomainError as exc:
            self.message_user(request, f"Nothing was imported: {exc.message}", messages.ERROR)
            return redirect("admin:marketing_customer_import")
        self.message_user(
            request,
            f"Imported {len(rows)} row(s) from {payload['filename']}: "
            f"{created} customer(s) created, {updated} updated.",
            messages.SUCCESS,
        )
        return redirect("admin:marketing_customer_changelist")


def _import_key(token: str) -> str:
    return f"admin:customer-import:{token}"


def _on_lines(errors: list[RowError], lines: list[int], batch: list[int]) -> list[RowError]:
    """Errors of a batch (the file's rows at the indices `batch`), renumbered to CSV lines."""
    return [
        RowError(row=lines[batch[e.row]] if e.row is not None else None, field=e.field, message=e.message)
        for e in errors
    ]


def _preview_cell(row: dict[str, Any], column: str) -> str:
    if column.startswith(csv_io.ATTRIBUTE_PREFIX):
        attributes = row.get("attributes") or {}
        name = column[len(csv_io.ATTRIBUTE_PREFIX) :]
        return csv_io.format_attribute(attributes[name]) if name in attributes else ""
    value = row.get(column)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- touchpoints ----------------------------------------------------------------------


class OccurredFilter(admin.SimpleListFilter):
    """Rolling windows instead of date_hierarchy: the hierarchy's SELECT DISTINCT over
    truncated dates reads every matching row, which on billions of touchpoints never
    finishes. Exact ranges still work in the URL (?occurred_at__gte=2026-01-01)."""

    title = "occurred"
    parameter_name = "occurred"
    WINDOWS = {
        "24h": timedelta(hours=24),
        "7d": timedelta(days=7),
        "30d": timedelta(days=30),
        "90d": timedelta(days=90),
    }

    def lookups(self, request, model_admin):
        return [
            ("24h", "In the last 24 hours"),
            ("7d", "In the last 7 days"),
            ("30d", "In the last 30 days"),
            ("90d", "In the last 90 days"),
        ]

    def queryset(self, request, queryset):
        window = self.WINDOWS.get(self.value())
        return queryset.filter(occurred_at__gte=timezone.now() - window) if window else queryset


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        kinds = set(TouchpointKind.values) | set(distinct_values(Touchpoint, "kind"))
        if self.value():
            kinds.add(self.value())
        return [(kind, kind) for kind in sorted(kinds)]

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


class ChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"
    NONE = "-"

    def lookups(self, request, model_admin):
        channels = list(KNOWN_CHANNELS)
        if self.value() and self.value() != self.NONE and self.value() not in channels:
            channels.append(self.value())
        return [*((c, c) for c in channels), (self.NONE, "No channel")]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(channel="" if value == self.NONE else value)


class CustomerFilter(admin.SimpleListFilter):
    """Shown only while the list is narrowed to one customer (the timeline's "all
    touchpoints" link), so it can be cleared."""

    title = "customer"
    parameter_name = "customer"

    def lookups(self, request, model_admin):
        value = self.value()
        if not value or not is_id(value):
            return []
        customer = Customer.objects.filter(pk=value).first()
        return [(value, str(customer) if customer else f"#{value}")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not is_id(value):
            raise IncorrectLookupParameters(f"customer must be an id, not {value!r}")
        return queryset.filter(customer_id=int(value))


@admin.register(Touchpoint)
class TouchpointAdmin(ReadOnlyMixin, HugeTableAdmin):
    """The append-only log: read-only here."""

    list_display = (
        "occurred_at",
        "kind",
        "channel",
        "customer_link",
        "money",
        "order_id",
        "sku",
        "campaign_id",
        "event_id",
    )
    list_display_links = ("occurred_at",)
    list_filter = (OccurredFilter, KindFilter, ChannelFilter, CustomerFilter)
    list_select_related = ("customer",)
    raw_id_fields = ("customer",)
    sortable_by = ()  # no column has an index to sort billions of rows by
    search_fields = ("=event_id",)
    search_help_text = "An event id, or a customer's external id (exact)."

    def get_ordering(self, request):
        # For one customer the timeline index gives time order; across customers the
        # primary key (arrival order) is the only index that sorts the whole log.
        if is_id(request.GET.get(CustomerFilter.parameter_name, "")):
            return ("-occurred_at", "-id")
        return ("-id",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # Resolved first, so the OR below is two index lookups, not a join.
        customer_ids = list(Customer.objects.filter(external_id=term).values_list("pk", flat=True)[:1])
        return queryset.filter(Q(event_id=term) | Q(customer_id__in=customer_ids)), False

    @admin.display(description="customer")
    def customer_link(self, obj: Touchpoint) -> str:
        url = reverse("admin:marketing_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer)

    @admin.display(description="revenue")
    def money(self, obj: Touchpoint) -> str:
        if obj.revenue is None:
            return ""
        return f"{obj.revenue.quantize(Decimal('0.01'))} {settings.REPORTING_CURRENCY}"


# --- products, suppressions, API keys, workers ----------------------------------------


@admin.register(Product)
class ProductAdmin(StampUpdatedAtMixin, admin.ModelAdmin):
    list_display = ("sku", "name", "category", "price", "active", "updated_at")
    list_filter = ("active", "category")
    search_fields = ("^sku", "name")
    ordering = ("name", "sku")
    readonly_fields = ("created_at", "updated_at")


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    form = SuppressionForm
    list_display = ("value", "kind", "reason", "note", "created_at")
    list_filter = ("kind", "reason")
    search_fields = ("value", "note")
    ordering = ("-id",)
    show_full_result_count = False
    readonly_fields = ("created_at",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created through api_key_create (the raw key is shown once, in a message)
    and revoked, never deleted: a revoked key keeps its history. The stored SHA-256 is not
    shown: it is not the key and is no use to anyone reading it."""

    list_display = ("name", "key_prefix", "created_at", "last_used_at", "state", "rate_limit_per_minute")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "^prefix")
    ordering = ("name",)
    actions = ("revoke",)
    fields = ("name", "prefix", "rate_limit_per_minute", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")

    @admin.display(description="key starts with", ordering="prefix")
    def key_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is None:
            return "active"
        return f"revoked {obj.revoked_at:%Y-%m-%d %H:%M}"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ("name", "rate_limit_per_minute") if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["rate_limit_per_minute"])
            return
        from marketing.services import api_key_create

        api_key, raw_key = api_key_create(obj.name, obj.rate_limit_per_minute)
        for model_field in ApiKey._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(api_key, model_field.attname))
        self.message_user(
            request,
            format_html(
                "The key for {} is <code>{}</code> — copy it now: only its hash is stored, "
                "so it cannot be shown again.",
                api_key.name,
                raw_key,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        from marketing.services import api_key_revoke

        names = list(queryset.filter(revoked_at__isnull=True).values_list("name", flat=True))
        for name in names:
            api_key_revoke(name)
        self.message_user(request, f"Revoked {len(names)} API key(s).", messages.SUCCESS)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("hostname", "seen_at", "alive")
    ordering = ("hostname",)
    fields = ("hostname", "seen_at")

    @admin.display(boolean=True, description="alive (seen in the last 3 minutes)")
    def alive(self, obj: WorkerHeartbeat) -> bool:
        return timezone.now() - obj.seen_at < HEARTBEAT_ALIVE
