"""Trained-model bytes of a ModelVersion, stored in the database (ModelArtifact).

Why the database: every worker, a GPU worker on another host included, already reaches
PostgreSQL, so no shared filesystem or object store is needed; an artifact is written in
the same place (and transaction) as its version, and deleted with it. `version.artifact`
records "db:sha256:<hex>" so a load can check it read the bytes that were saved.
"""

from __future__ import annotations

import hashlib

from mlcore.models import ModelArtifact, ModelVersion

PREFIX = "db:sha256:"


class ArtifactError(Exception):
    """The version has no stored artifact, or its bytes do not match the recorded hash."""


def artifact_save(version: ModelVersion, blob: bytes) -> None:
    """Store `blob` as the artifact of `version` (replacing any earlier one) and set
    `version.artifact` to "db:sha256:<hex>" (saved on the row and on the object)."""
    blob = bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    ModelArtifact.objects.update_or_create(
        version=version, defaults={"data": blob, "sha256": digest, "size": len(blob)}
    )
    version.artifact = PREFIX + digest
    ModelVersion.objects.filter(pk=version.pk).update(artifact=version.artifact)


def artifact_load(version: ModelVersion) -> bytes:
    """The bytes saved by `artifact_save` for `version`; ArtifactError when there are none
    or they do not hash to what the version records."""
    row = ModelArtifact.objects.filter(version_id=version.pk).values_list("data", "sha256").first()
    if row is None:
        raise ArtifactError(f"model version {version.pk} has no stored artifact")
    blob, digest = bytes(row[0]), row[1]
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ArtifactError(f"the artifact of model version {version.pk} is corrupt (sha256 mismatch)")
    return blob
