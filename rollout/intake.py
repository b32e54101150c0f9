"""Reading a release blob the blob trigger handed over: its size first, then exactly that version.

One place for what every receiver of a release blob needs, a single scale set's ``RolloutService`` and a
group's ``GroupService`` (through ``rollout.fleet.Fleet``) alike: a blob larger than a release may be is
refused from its properties alone, so a multi-GB upload never reaches memory (its rollout id then comes
from the name and ETag, ``unread_rollout_id``, because the content hash would need the content);
otherwise exactly the checked version is read (never more than its size), parsed into a ``Release``
and, for a script, checked for syntax. Storage errors other than "gone" or "changed" propagate: the
Functions host retries the invocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.model import Release, ReleaseKind
from rollout.ports import ConcurrencyError, NotFoundError, ReleaseBlob, ScriptChecker
from rollout.releases import (
    ReleaseError,
    ReleaseName,
    build_release,
    rejected_release,
    size_problem,
    unread_release,
    unread_rollout_id,
)


@dataclass(frozen=True)
class Received:
    """A release blob as read. ``problem``: why it cannot be used (record it Rejected, never start it);
    ``rollout_id``: the id to record it under when the content was never read (else ``rollout_id_for``)."""

    release: Release
    problem: str | None = None
    rollout_id: str | None = None


@dataclass(frozen=True)
class Vanished:
    """The blob is gone, or was replaced while read (its new version has its own event): nothing to do."""

    reason: str


def read_release_blob(blob: ReleaseBlob, parsed: ReleaseName, checker: ScriptChecker | None) -> Received | Vanished:
    try:
        version = blob.version()
        problem = size_problem(parsed, version.size)
        if problem is not None:
            return Received(unread_release(parsed, blob.url), problem, unread_rollout_id(parsed, version.etag))
        content = blob.read(version)
    except NotFoundError:
        return Vanished(f"{blob.name} no longer exists")
    except ConcurrencyError:
        return Vanished(f"{blob.name} changed while it was read; its new version is handled on its own")
    return parse_release_content(parsed, blob.url, content, checker)


def parse_release_content(
    parsed: ReleaseName, blob_url: str, content: bytes, checker: ScriptChecker | None
) -> Received:
    """A release's content, read: the ``Release``, or why it cannot be used."""
    try:
        release = build_release(parsed, blob_url, content)
    except ReleaseError as exc:
        return Received(rejected_release(parsed, blob_url, content), str(exc))
    if release.kind is ReleaseKind.SCRIPT and checker is not None:
        problem = checker.problems(release.blob_name, content)
        if problem is not None:
            return Received(release, problem)
    return Received(release)
