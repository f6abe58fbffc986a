"""Forms of the marketing admin. Customer edits and CSV imports are validated by the bulk
ingest service, so the admin and the API accept exactly the same data."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import validate_email

from marketing import csv_io
from marketing.errors import RowError
from marketing.ingest import customers_validate
from marketing.ingest.validate import CONSENT_FIELDS, CUSTOMER_TEXT_KEYS, E164, PHONE_NOISE
from marketing.models import ApiKey, Customer, Suppression

# Fields a marketer edits on the customer page; everything else is written by ingest.
CUSTOMER_EDITABLE = ("external_id", *CUSTOMER_TEXT_KEYS, "attributes", *CONSENT_FIELDS)


def apply_row_errors(form: forms.Form, errors: list[RowError]) -> None:
    for error in errors:
        field = error.field if error.field in form.fields else None
        message = error.message if field else f"{error.field}: {error.message}" if error.field else error.message
        form.add_error(field, message)


class CustomerForm(forms.ModelForm):
    """Saved through the bulk upsert (see CustomerAdmin.save_model), so consent changes get
    their time and source ("admin:<user>") and the ingest rules apply unchanged."""

    # No model validator on the form field: the ingest validation accepts "+1 415 555 0123"
    # and stores +14155550123.
    phone = forms.CharField(required=False, max_length=32, help_text="E.164, e.g. +14155550123.")
    unsubscribed = forms.BooleanField(required=False, help_text="Unsubscribed from all marketing.")

    class Meta:
        model = Customer
        fields = CUSTOMER_EDITABLE

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ingest_row: dict[str, Any] = {}
        if self.instance.pk is not None:
            self.fields["unsubscribed"].initial = self.instance.unsubscribed_at is not None

    def _changes_as_row(self) -> dict[str, Any]:
        """The bulk-API row for what the marketer changed (omitted keys stay as they are).
        Built in clean(), before the form copies its data onto the instance."""
        data = self.cleaned_data
        external_id = data.get("external_id") or self.instance.external_id
        row: dict[str, Any] = {"external_id": external_id}
        for name in self.changed_data:
            if name == "external_id" or name not in data:
                continue
            if name == "attributes":
                old = self.instance.attributes if isinstance(self.instance.attributes, dict) else {}
                new = data["attributes"]
                if isinstance(new, dict):
                    # The upsert merges attributes; a key the marketer deleted is sent as null.
                    row["attributes"] = {**{key: None for key in old if key not in new}, **new}
                else:
                    row["attributes"] = new  # not an object: the validation says so
            else:
                row[name] = data[name]
        return row

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        self.ingest_row = self._changes_as_row()
        if "attributes" in data and data["attributes"] is None:
            data["attributes"] = {}  # an emptied box clears them (sent as null above)
        clean_rows, errors = customers_validate([self.ingest_row])
        if errors:
            apply_row_errors(self, errors)
            return data
        # Show and store the normalised values (lower-case email, E.164 phone, upper-case
        # country) before the model's own validation runs on them.
        for name, value in clean_rows[0].values.items():
            if name in data and name in self.changed_data:
                data[name] = value
        return data


class CsvImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "A header row naming the columns: external_id (required), email, phone, first_name, last_name, "
            "country, timezone, locale, email_opt_in, sms_opt_in, push_opt_in, unsubscribed, and "
            "attributes.<name> for attributes. Empty cells leave a field unchanged; booleans are "
            "true/false, 1/0 or yes/no. UTF-8 (Excel: CSV UTF-8), comma or semicolon separated."
        ),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > csv_io.MAX_IMPORT_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {csv_io.MAX_IMPORT_BYTES:,}. "
                "Split it, or use the bulk API."
            )
        try:
            self.parsed = csv_io.parse_customers_csv(upload.read())
        except csv_io.CsvFileError as exc:
            raise forms.ValidationError(exc.message) from None
        return upload


class CsvConfirmForm(forms.Form):
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)


class SuppressionForm(forms.ModelForm):
    """Stores the value the way the send-time check compares it: email lower-case, phone
    in E.164."""

    class Meta:
        model = Suppression
        fields = ("kind", "value", "reason", "note")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind, value = data.get("kind"), (data.get("value") or "").strip()
        if not kind or not value:
            return data
        if kind == Suppression.Kind.EMAIL:
            value = value.lower()
            try:
                validate_email(value)
            except forms.ValidationError:
                self.add_error("value", "Enter a valid email address.")
                return data
        else:
            value = PHONE_NOISE.sub("", value)
            if not E164.match(value):
                self.add_error("value", "Enter a phone number in E.164 form, e.g. +14155550123.")
                return data
        data["value"] = value
        return data


class ApiKeyAddForm(forms.ModelForm):
    rate_limit_per_minute = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Requests per minute; empty means the installation's default.",
    )

    class Meta:
        model = ApiKey
        fields = ("name", "rate_limit_per_minute")
        help_texts = {"name": "The integration this key is for, e.g. 'Salesforce sync'."}
