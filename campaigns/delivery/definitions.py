"""Channels, devices, campaigns and creatives as marketers and integrations define them:
the writes and their rules, shared by the REST API and the admin (thin callers of these).

What may change once a campaign has launched is decided here, once: the fields that say
who is treated and who is held out (audience, exclusions, holdout, trigger) are fixed from
the first run on, so every run of a campaign is one experiment; a finished campaign is a
record, where only its name, description and measurement settings still change.
"""

from __future__ import annotations

import hashlib
import re
from types import SimpleNamespace
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from campaigns.delivery.backends import channel_settings_errors, send_test
from campaigns.delivery.control import campaign_definition_errors
from campaigns.delivery.render import (
    CUSTOMER_CONTEXT_FIELDS,
    SAMPLE_CUSTOMER,
    CreativeTemplateError,
    creative_template_errors,
    customer_context,
    render_creative,
)
from campaigns.models import Campaign, Channel, Creative, Device, Message, Segment
from marketing.errors import BatchInvalid, Conflict, RowError
from marketing.models import Customer

# --- channels -------------------------------------------------------------------------------

# Secrets never enter the database or an API answer: a settings key that names one (at any
# depth, headers included) is refused, and the backend reads the value from the
# environment variable named by "<key>_env" instead.
SECRET_SUFFIXES = ("password", "token", "secret", "api_key", "apikey", "api-key", "authorization")


def settings_secret_errors(value: Any, path: str = "settings") -> list[RowError]:
    """A RowError for every key (at any depth) that would hold a secret in clear."""
    errors: list[RowError] = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}"
            if isinstance(key, str) and key.lower().endswith(SECRET_SUFFIXES):
                errors.append(
                    RowError(
                        row=None,
                        field=name,
                        message="secrets are not stored: put it in an environment variable and name that in "
                        f'"{key}_env"',
                    )
                )
            else:
                errors.extend(settings_secret_errors(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors.extend(settings_secret_errors(item, f"{path}[{index}]"))
    return errors


def channel_errors(kind: str, backend: str, settings: Any) -> list[RowError]:
    """Every problem of a channel's backend settings: secrets in clear, then what the
    backend itself checks (campaigns.delivery.backends)."""
    if not isinstance(settings, dict):
        return [RowError(row=None, field="settings", message="must be a JSON object")]
    errors = settings_secret_errors(settings)
    if errors:
        return errors
    return [_field_message(error, "settings") for error in channel_settings_errors(kind, backend, settings)]


CHANNEL_FIELDS = ("name", "kind", "backend", "settings", "cost_per_message", "rate_limit_per_second", "enabled")


@transaction.atomic
def channel_create(**fields: Any) -> Channel:
    """A channel whose settings its backend accepts (BatchInvalid naming each problem)."""
    fields.setdefault("backend", "default")
    fields.setdefault("settings", {})
    _raise(channel_errors(fields["kind"], fields["backend"], fields["settings"]))
    _raise(_unique_name(Channel, fields["name"]))
    return Channel.objects.create(**fields)


@transaction.atomic
def channel_update(channel: Channel, **changes: Any) -> Channel:
    """The kind cannot change: messages and creatives were made for it."""
    channel = Channel.objects.select_for_update().get(pk=channel.pk)
    if "kind" in changes and changes["kind"] != channel.kind:
        _raise([RowError(row=None, field="kind", message=f"cannot be changed (it is {channel.kind!r})")])
    for key, value in changes.items():
        setattr(channel, key, value)
    _raise(channel_errors(channel.kind, channel.backend, channel.settings))
    if "name" in changes:
        _raise(_unique_name(Channel, channel.name, exclude=channel.pk))
    channel.updated_at = timezone.now()
    channel.save()
    return channel


@transaction.atomic
def channel_delete(channel: Channel) -> None:
    try:
        with transaction.atomic():
            channel.delete()
    except ProtectedError:
        raise Conflict(
            f"Channel {channel.pk} has sent messages and is kept for their history; set enabled to false instead."
        ) from None


# --- devices --------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def device_upsert(customer: Customer, *, platform: str, token: str, enabled: bool = True) -> tuple[Device, bool]:
    """Register a push token for a customer, or move it: a token belongs to one app
    install, so the customer last seen with it owns it (a shared tablet, a reinstall).
    Returns the device and whether it was created."""
    if customer.erased_at is not None:
        _raise([RowError(row=None, field="customer", message=f"customer {customer.pk} was erased (GDPR)")])
    digest = token_hash(token)
    now = timezone.now()
    with transaction.atomic():
        created = not Device.objects.filter(token_hash=digest).exists()
        # One statement either way, so two apps registering the same token at once cannot
        # collide on the unique hash.
        Device.objects.bulk_create(
            [
                Device(
                    customer=customer,
                    platform=platform,
                    token=token,
                    token_hash=digest,
                    enabled=enabled,
                    last_seen_at=now,
                )
            ],
            update_conflicts=True,
            unique_fields=["token_hash"],
            update_fields=["customer", "platform", "token", "enabled", "last_seen_at"],
        )
    return Device.objects.get(token_hash=digest), created


def device_delete(device: Device) -> None:
    device.delete()


# --- campaigns ------------------------------------------------------------------------------

LAUNCHED = frozenset(
    {Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.COMPLETED, Campaign.Status.CANCELLED}
)
FINISHED = frozenset({Campaign.Status.COMPLETED, Campaign.Status.CANCELLED})
# Who is treated and who is held out: fixed from the first run on.
DESIGN_FIELDS = (
    "audience",
    "exclusions",
    "holdout_percent",
    "trigger",
    "trigger_segment",
    "trigger_event_kind",
    "persuadables_only",
    "min_uplift",
)
# How a campaign is measured and named: editable until the end and after it.
ALWAYS_EDITABLE = ("name", "description", "goal_event", "attribution_window_days", "fixed_cost")
CAMPAIGN_FIELDS = (
    "name",
    "description",
    "trigger",
    "audience",
    "exclusions",
    "send_at",
    "cron",
    "trigger_segment",
    "trigger_event_kind",
    "holdout_percent",
    "persuadables_only",
    "min_uplift",
    "frequency_cap",
    "frequency_cap_days",
    "quiet_hours_start",
    "quiet_hours_end",
    "budget",
    "fixed_cost",
    "goal_event",
    "attribution_window_days",
    "channel_policy",
    "creative_policy",
)
M2M_FIELDS = ("audience", "exclusions")


def campaign_launched(campaign: Campaign) -> bool:
    return campaign.status in LAUNCHED or campaign.runs.exists()


def campaign_locked_fields(campaign: Campaign) -> dict[str, str]:
    """The fields that can no longer change, each with the reason (empty for a draft)."""
    if campaign.status in FINISHED:
        why = f"the campaign is {campaign.status}: only {', '.join(ALWAYS_EDITABLE)} can change"
        return {name: why for name in CAMPAIGN_FIELDS if name not in ALWAYS_EDITABLE}
    if not campaign_launched(campaign):
        return {}
    why = "fixed once the campaign has launched: it decides who is treated and who is held out"
    locked = {name: why for name in DESIGN_FIELDS}
    locked["send_at"] = "the campaign has launched already"
    return locked


def campaign_value(campaign: Campaign, name: str) -> Any:
    """A field's stored value, comparable with _normalised input (segment ids as a set)."""
    if name in M2M_FIELDS:
        return {segment.pk for segment in getattr(campaign, name).all()} if campaign.pk else set()
    if name == "trigger_segment":
        return campaign.trigger_segment_id
    return getattr(campaign, name)


def _normalised(name: str, value: Any) -> Any:
    if name in M2M_FIELDS:
        return {item.pk if isinstance(item, Segment) else int(item) for item in value or ()}
    if name == "trigger_segment":
        return value.pk if isinstance(value, Segment) else value
    return value


def campaign_changed_fields(campaign: Campaign, changes: dict[str, Any]) -> list[str]:
    """The fields in `changes` whose value differs from the campaign's (so a PUT that
    sends every field unchanged is no edit)."""
    return [name for name, value in changes.items() if _normalised(name, value) != campaign_value(campaign, name)]


def campaign_errors(campaign: Campaign, audience: set[int], exclusions: set[int]) -> list[RowError]:
    """What is wrong with a campaign's definition as it would be saved (`campaign` carries
    the new values, unsaved): what control checks of a draft (a cron that does not parse, a
    malformed policy, quiet hours without an end, a trigger kind campaigns write
    themselves…), plus quiet hours that start when they end and a segment both in the
    audience and excluded. Missing pieces (no audience, no creative) wait for the launch."""
    errors = campaign_definition_errors(campaign, for_launch=False)
    start, end = campaign.quiet_hours_start, campaign.quiet_hours_end
    if start is not None and start == end:
        errors.append(RowError(row=None, field="quiet_hours_end", message="must differ from quiet_hours_start"))
    both = audience & exclusions
    if both:
        errors.append(
            RowError(
                row=None,
                field="exclusions",
                message=f"segment(s) {', '.join(map(str, sorted(both)))} are also in the audience",
            )
        )
    return errors


@transaction.atomic
def campaign_create(**fields: Any) -> Campaign:
    """A draft: only a name is needed; what is given must be well-formed (campaign_errors)."""
    audience = fields.pop("audience", None) or []
    exclusions = fields.pop("exclusions", None) or []
    campaign = Campaign(**fields)
    _raise(campaign_errors(campaign, _normalised("audience", audience), _normalised("exclusions", exclusions)))
    campaign.save()
    campaign.audience.set(audience)
    campaign.exclusions.set(exclusions)
    return campaign


@transaction.atomic
def campaign_update(campaign: Campaign, **changes: Any) -> Campaign:
    """Change a campaign's definition. Conflict (naming the fields) for a field locked by
    its status (campaign_locked_fields); nothing is written then."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    changed = campaign_changed_fields(campaign, changes)
    locked = campaign_locked_fields(campaign)
    refused = [name for name in changed if name in locked]
    if refused:
        reasons = "; ".join(sorted({locked[name] for name in refused}))
        raise Conflict(
            f"Campaign {campaign.pk} is {campaign.status}: {', '.join(refused)} cannot change ({reasons}). "
            "Create a new campaign to change them."
        )
    segments = {
        name: _normalised(name, changes[name]) if name in changes else campaign_value(campaign, name)
        for name in M2M_FIELDS
    }
    for name in changed:
        if name not in M2M_FIELDS:
            setattr(campaign, name, changes[name])
    _raise(campaign_errors(campaign, segments["audience"], segments["exclusions"]))
    campaign.updated_at = timezone.now()
    campaign.save()
    for name in M2M_FIELDS:
        if name in changed:
            getattr(campaign, name).set(changes[name])
    return campaign


@transaction.atomic
def campaign_delete(campaign: Campaign) -> None:
    """Only a draft that never made a message: anything else is history (cancel it instead)."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != Campaign.Status.DRAFT:
        raise Conflict(f"Campaign {campaign.pk} is {campaign.status}: only drafts can be deleted; cancel it instead.")
    if Message.objects.filter(campaign_id=campaign.pk).exists():
        raise Conflict(f"Campaign {campaign.pk} has messages: they are kept for its history.")
    campaign.delete()


# --- creatives ------------------------------------------------------------------------------

CREATIVE_FIELDS = ("channel_kind", "name", "subject", "body", "html_body", "weight", "sku", "enabled")


def creative_errors(fields: dict[str, Any]) -> list[RowError]:
    """Template problems of a creative's subject and bodies, each naming its field."""
    errors = creative_template_errors(SimpleNamespace(**fields))
    return [RowError(row=None, field=name, message=message) for name, message in errors.items()]


def _creative_fields(creative: Creative | None, changes: dict[str, Any]) -> dict[str, Any]:
    current = {name: getattr(creative, name) for name in CREATIVE_FIELDS} if creative is not None else {}
    return {**current, **changes}


def _finished_guard(campaign: Campaign) -> None:
    if campaign.status in FINISHED:
        raise Conflict(f"Campaign {campaign.pk} is {campaign.status}: its creatives are part of its record.")


def _creative_name_errors(campaign_id: int, channel_kind: str, name: str, exclude: int | None = None) -> list[RowError]:
    same = Creative.objects.filter(campaign_id=campaign_id, channel_kind=channel_kind, name=name)
    if exclude is not None:
        same = same.exclude(pk=exclude)
    if same.exists():
        return [
            RowError(
                row=None,
                field="name",
                message=f"campaign {campaign_id} already has a {channel_kind} creative named {name!r}",
            )
        ]
    return []


@transaction.atomic
def creative_create(campaign: Campaign, **fields: Any) -> Creative:
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    _finished_guard(campaign)
    fields.setdefault("name", "A")
    _raise(
        creative_errors(_creative_fields(None, fields))
        + _creative_name_errors(campaign.pk, fields["channel_kind"], fields["name"])
    )
    return Creative.objects.create(campaign=campaign, **fields)


def creative_has_messages(creative: Creative) -> bool:
    return Message.objects.filter(campaign_id=creative.campaign_id, creative_id=creative.pk).exists()


@transaction.atomic
def creative_update(creative: Creative, **changes: Any) -> Creative:
    """Edits of a launched campaign's creative reach the messages still queued (a typo
    fixed in time); its channel kind cannot change once messages were made with it."""
    campaign = Campaign.objects.select_for_update().get(pk=creative.campaign_id)
    _finished_guard(campaign)
    creative = Creative.objects.select_for_update().get(pk=creative.pk)
    moved_to = changes.pop("campaign", creative.campaign_id)
    if (moved_to.pk if isinstance(moved_to, Campaign) else moved_to) != creative.campaign_id:
        _raise([RowError(row=None, field="campaign", message=f"cannot be changed (it is {creative.campaign_id})")])
    kind = changes.get("channel_kind", creative.channel_kind)
    if kind != creative.channel_kind and creative_has_messages(creative):
        raise Conflict(f"Creative {creative.pk} has messages: its channel kind cannot change; add a new creative.")
    _raise(
        creative_errors(_creative_fields(creative, changes))
        + _creative_name_errors(creative.campaign_id, kind, changes.get("name", creative.name), exclude=creative.pk)
    )
    for key, value in changes.items():
        setattr(creative, key, value)
    creative.save()
    return creative


@transaction.atomic
def creative_delete(creative: Creative) -> None:
    campaign = Campaign.objects.select_for_update().get(pk=creative.campaign_id)
    _finished_guard(campaign)
    if creative_has_messages(creative):
        raise Conflict(f"Creative {creative.pk} has messages and is kept for their history; set enabled to false.")
    creative.delete()


# --- shared ---------------------------------------------------------------------------------


_FIELD_PREFIX = re.compile(r"^(kind|backend|settings(?:[.\[][^:\s]*)?): ")


def _field_message(error: str, default_field: str) -> RowError:
    """A backend's "<field>: <why>" message as a RowError on that field."""
    match = _FIELD_PREFIX.match(error)
    if match is None:
        return RowError(row=None, field=default_field, message=error)
    return RowError(row=None, field=match.group(1), message=error[match.end() :])


def _raise(errors: list[RowError]) -> None:
    if errors:
        raise BatchInvalid(errors)


def _unique_name(model: type, name: str, exclude: int | None = None) -> list[RowError]:
    same = model.objects.filter(name=name)
    if exclude is not None:
        same = same.exclude(pk=exclude)
    return [RowError(row=None, field="name", message="is already taken")] if same.exists() else []


# --- previews -------------------------------------------------------------------------------

# Whom a preview renders for when no customer is named (render.SAMPLE_CUSTOMER); the
# caller's fields override its.


def creative_preview(creative: Creative, *, customer: Customer | None = None, fields: dict | None = None) -> dict:
    """The creative rendered as `customer` would get it (without tracking: no message
    exists), or for the sample customer with `fields` laid over it. A template that fails
    to render is a BatchInvalid naming its field."""
    if customer is not None:
        row = Customer.objects.filter(pk=customer.pk).values(*CUSTOMER_CONTEXT_FIELDS).get()
    else:
        row = {**SAMPLE_CUSTOMER, **(fields or {})}
    context = customer_context(row, campaign=creative.campaign)
    try:
        rendered = render_creative(creative, context)
    except CreativeTemplateError as exc:
        raise BatchInvalid([RowError(row=None, field=exc.field, message=exc.detail)]) from None
    return {
        "creative_id": creative.pk,
        "customer_id": customer.pk if customer is not None else None,
        "subject": rendered.subject,
        "text": rendered.text,
        "html": rendered.html,
    }


def creative_send_test(creative: Creative, to: str) -> dict:
    """The "send a test to me" of a creative: rendered for a sample customer, to `to`,
    through its campaign's channel of its kind (campaigns.delivery.backends.send_test).
    BatchInvalid for an address the channel cannot use, Conflict without an enabled
    channel, SendFailed (502) when the provider refuses."""
    return send_test(creative, to)
