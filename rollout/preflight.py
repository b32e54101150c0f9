"""Pre-flight: what a release would meet on a scale set, checked before anything is written. Pure.

``findings(release, fleet, policy, ...)`` returns every ``Finding`` (a check, a severity, a reason):
``refuse`` findings make admission reject the release (``rollout.admission.admit`` records it
``Rejected`` with their reasons), ``warn`` findings are shown by the what-if plan (``rollout.whatif``)
and recorded as events when a rollout starts anyway. What needs I/O is read by the caller and passed
in: the observed scale set, the results of reading the images (``images_to_check``) and the release
container's blobs (``blobs_to_check``).

The checks, in order:

* orchestration: the scale set's mode and upgrade policy (``rollout.orchestration``);
* policy: whether the policy can run a canary on this many instances (``policy_findings``);
* fleet: enough healthy instances, and an unavailability budget not used up before the start;
* replaced: what the release replaces, in a form a rollback can restore;
* image: the release's image and the current one exist and can be read;
* blobs: the scripts a rollback (or a revert) runs still exist, unchanged, in the release container.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from rollout.analysis import assess_instance
from rollout.model import ExtensionSpec, FleetView, Health, Release, ReleaseKind
from rollout.orchestration import orchestration_problem
from rollout.policy import RolloutPolicy
from rollout.releases import (
    CUSTOM_SCRIPT_PUBLISHER,
    CUSTOM_SCRIPT_TYPE,
    ExtensionDefaults,
    image_missing_reason,
    image_unreadable_reason,
)

# The result of reading an image (``images`` of ``findings``): None = readable, IMAGE_MISSING = 404,
# any other text = why ARM refused the read (e.g. "403 AuthorizationFailed").
IMAGE_MISSING = "missing"
# ``BlobRead.problem`` of a blob that does not exist.
BLOB_MISSING = "missing"


class Severity(enum.StrEnum):
    REFUSE = "refuse"  # the release is rejected: it cannot end well
    WARN = "warn"  # it may start; the what-if shows it and the rollout's trail records it


@dataclass(frozen=True)
class Finding:
    check: str  # orchestration, policy, fleet, replaced, image, blob
    severity: Severity
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity.value, "reason": self.reason}


@dataclass(frozen=True)
class BlobRead:
    """What reading one blob of the release container gave: the SHA-256 of its content, or why not."""

    sha256: str = ""
    problem: str = ""  # "" = read; BLOB_MISSING; or what Storage said


def refusal(found: list[Finding]) -> str | None:
    """The reasons of the ``refuse`` findings, joined; None when there is none."""
    reasons = [f.reason for f in found if f.severity is Severity.REFUSE]
    return "; ".join(reasons) if reasons else None


# --- policy ------------------------------------------------------------------------------------------


def unavailable_at_once(policy: RolloutPolicy, fleet_size: int) -> int:
    """The most instances the policy lets a rollout take down at once on this fleet: the canary's
    budget (``RolloutPolicy.calculate_canary_budget``), which is never below the batches' budget."""
    return policy.calculate_canary_budget(fleet_size)


def effective_batch(policy: RolloutPolicy, fleet_size: int) -> int:
    """The size of a promotion batch on a healthy fleet: the batch size, capped by the budget
    (``machine._decide_promoting`` takes healthy instances only while the budget allows)."""
    return min(policy.calculate_batch_size(fleet_size), policy.calculate_max_unavailable(fleet_size))


def policy_findings(policy: RolloutPolicy, fleet_size: int) -> list[Finding]:
    """Can this policy run a canary on ``fleet_size`` instances and keep the capacity it promises?

    Impossible (``refuse``), from the arithmetic of ``rollout.policy`` and ``rollout.machine``:

    * the canary is the whole fleet (``CANARY_COUNT`` >= instances): no instance stays on the
      baseline to compare with, and the first step takes every instance down;
    * the unavailability budget is the whole fleet (``max(CANARY_COUNT, MAX_UNAVAILABLE)`` rounded up
      >= instances): one bad step is a full outage;
    * ``MAX_UNAVAILABLE`` is a share under 50% and rounding it up to whole instances takes half the
      fleet or more down at once (20% of 2 instances is 1 instance: 50%). The policy promises to keep
      most of the fleet serving; on this fleet every step breaks that promise. A count
      (``MAX_UNAVAILABLE=1``) says the operator accepts it;
    * ``MIN_HEALTHY_INSTANCES`` is more than the fleet has: the canary can never start.

    Possible but not what the policy says (``warn``): the share rounds up to more than asked, the
    batch is larger than the budget (batches are capped), the canary is larger than the budget."""
    n = fleet_size
    out: list[Finding] = []
    if n <= 0:
        return [Finding("policy", Severity.REFUSE, "the scale set has no instances: there is nothing to release to")]

    def refuse(text: str) -> None:
        out.append(Finding("policy", Severity.REFUSE, text))

    def warn(text: str) -> None:
        out.append(Finding("policy", Severity.WARN, text))

    down = unavailable_at_once(policy, n)
    share = 100 * down / n
    percent = policy.max_unavailable == 0  # MAX_UNAVAILABLE given as a share of the fleet
    asked = (
        f"MAX_UNAVAILABLE {policy.max_unavailable_percent}%" if percent else f"MAX_UNAVAILABLE {policy.max_unavailable}"
    )
    if policy.canary_count >= n:
        refuse(
            f"CANARY_COUNT {policy.canary_count} covers all {n} instance(s): no instance would stay on the current "
            "release to compare the canary with, and the canary step takes the whole fleet down"
        )
    elif down >= n:
        refuse(
            f"{asked} (with CANARY_COUNT {policy.canary_count}) lets {down} of {n} instance(s) be down at once: "
            "the whole fleet, so one bad step is a full outage"
        )
    elif percent and policy.max_unavailable_percent < 50 and 2 * down >= n:
        refuse(
            f"{asked} of {n} instance(s) rounds up to {down} instance(s) ({share:.0f}% of the fleet): every step "
            f"would take half the fleet or more down, which a {policy.max_unavailable_percent}% budget promises "
            "not to do. Set MAX_UNAVAILABLE to a count (e.g. 1) to accept that, or add instances"
        )
    if policy.min_healthy_instances > n:
        refuse(
            f"MIN_HEALTHY_INSTANCES {policy.min_healthy_instances} is more than the {n} instance(s) of the scale set"
        )
    if out:
        return out
    if percent and share > policy.max_unavailable_percent:
        warn(
            f"{asked} of {n} instance(s) rounds up to {down} instance(s): {share:.0f}% of the fleet may be down at once"
        )
    size, budget = policy.calculate_batch_size(n), policy.calculate_max_unavailable(n)
    if size > budget:
        warn(f"batches of {size} are capped at the unavailability budget: {budget} instance(s) per batch")
    if policy.canary_count > budget:
        warn(
            f"CANARY_COUNT {policy.canary_count} is more than the budget of {budget}: the canary alone takes "
            f"{policy.canary_count} instance(s) down"
        )
    return out


# --- the fleet ---------------------------------------------------------------------------------------


def fleet_findings(fleet: FleetView, policy: RolloutPolicy) -> list[Finding]:
    """Enough healthy instances to start (refuse); unhealthy instances that use up the budget, so the
    canary waits for one to recover (warn), or that make the batches smaller (warn)."""
    n = len(fleet.instances)
    problem = capacity_problem(fleet, policy)
    if problem is not None:
        return [Finding("fleet", Severity.REFUSE, problem)]
    down = [v.instance_id for v in fleet.instances if assess_instance(v) is not Health.HEALTHY]
    if not down:
        return []
    budget = unavailable_at_once(policy, n)
    shown = ", ".join(down[:10]) + (", ..." if len(down) > 10 else "")
    if len(down) >= budget:
        return [
            Finding(
                "fleet",
                Severity.WARN,
                f"{len(down)} of {n} instance(s) are unavailable already ({shown}), which uses the whole "
                f"unavailability budget of {budget}: no canary can be chosen until one recovers, and the rollout "
                f"rolls back if none does within PROGRESS_DEADLINE_SECONDS ({policy.progress_deadline_seconds} s). "
                "Repair or remove them first",
            )
        ]
    return [
        Finding(
            "fleet",
            Severity.WARN,
            f"{len(down)} of {n} instance(s) are unavailable ({shown}): they count against the budget of {budget}, "
            "so batches are smaller until they recover",
        )
    ]


def capacity_problem(fleet: FleetView, policy: RolloutPolicy) -> str | None:
    healthy = [v for v in fleet.instances if assess_instance(v) is Health.HEALTHY]
    if len(healthy) < policy.min_healthy_instances:
        return (
            f"{len(healthy)} of {len(fleet.instances)} instances are healthy; "
            f"at least {policy.min_healthy_instances} needed to start a canary"
        )
    return None


def replaced_problem(release: Release, fleet: FleetView, extension: ExtensionDefaults) -> str | None:
    """Does the scale set have what the release replaces, in a form a rollback can restore?"""
    if release.kind is ReleaseKind.SCRIPT and fleet.model.extension is None:
        return (
            f"the scale set has no extension named {extension.extension_name!r}: "
            "a script release needs one to roll back to"
        )
    if release.kind is ReleaseKind.IMAGE and not fleet.model.image_id:
        return "the scale set does not use a managed image id: an image release would have no image to roll back to"
    if release.kind is ReleaseKind.SCRIPT:
        return extension_problem(fleet.model.extension)
    return None


def extension_problem(current: ExtensionSpec | None) -> str | None:
    """Can a script release take over this extension and give it back intact on rollback?"""
    if current is None:
        return None
    # Releases are written for the Custom Script Extension v2 for Linux (publisher
    # Microsoft.Azure.Extensions, type CustomScript: "Use the Azure Custom Script Extension
    # Version 2 with Linux virtual machines", learn.microsoft.com/azure/virtual-machines/
    # extensions/custom-script-linux). Another extension of that name would get settings it
    # does not understand.
    if (current.publisher.lower(), current.type.lower()) != (
        CUSTOM_SCRIPT_PUBLISHER.lower(),
        CUSTOM_SCRIPT_TYPE.lower(),
    ):
        return (
            f"the scale set's extension {current.name!r} is {current.publisher or '?'}/{current.type or '?'}, "
            f"not the Custom Script Extension v2 for Linux ({CUSTOM_SCRIPT_PUBLISHER}/{CUSTOM_SCRIPT_TYPE}) "
            "that script releases are written for; nothing was changed. Point EXTENSION_NAME at the scale "
            "set's CustomScript extension, or add one (install the current script with it) before releasing"
        )
    if current.protected_settings_from_key_vault is not None:
        return (
            f"the scale set's extension {current.name!r} reads its protected settings from Key Vault "
            "(protectedSettingsFromKeyVault); nothing was changed. A release writes its own "
            "protectedSettings (how the VMs download the script), and an extension holds "
            "either protectedSettings or protectedSettingsFromKeyVault, so the release would drop the "
            "Key Vault reference; ARM never returns protected settings, so what the secret holds could "
            "not be checked or restored by a rollback. Move what the secret holds into the release script "
            "(the VMs' managed identity can read Key Vault at run time) and remove "
            "protectedSettingsFromKeyVault from the extension, or ship the change as an image release"
        )
    return None


_CURRENT_IMAGE = " (the scale set's current image, which a rollback writes back)"


def images_to_check(release: Release, fleet: FleetView) -> list[str]:
    """The images to read before an image release starts, in order: the release's, then the scale
    set's current one (a rollback writes it back, and ARM checks read access on that write too).
    ARM refuses a model write naming an image the identity cannot read (403 LinkedAuthorizationFailed)."""
    if release.kind is not ReleaseKind.IMAGE or not release.image_id:
        return []
    images = [release.image_id]
    if fleet.model.image_id and fleet.model.image_id.lower() != release.image_id.lower():
        images.append(fleet.model.image_id)
    return images


def image_problem(release: Release, fleet: FleetView, images: Mapping[str, str | None]) -> str | None:
    """The first image of ``images_to_check`` that cannot be read, from the reads' results. A reader
    may stop at the first failure: images after it need no result."""
    for n, image_id in enumerate(images_to_check(release, fleet)):
        if image_id not in images:
            raise ValueError(f"no read result for image {image_id}")
        result = images[image_id]
        role = _CURRENT_IMAGE if n else ""
        if result == IMAGE_MISSING:
            return image_missing_reason(image_id + role)
        if result is not None:
            return image_unreadable_reason(image_id + role, result)
    return None


# --- blobs the rollback (or a revert) needs ------------------------------------------------------------


def _blob_name(url: str, container_url: str | None) -> str | None:
    """The blob name of ``url`` in the release container, or None when it is not there."""
    if not container_url:
        return None
    prefix = container_url.rstrip("/") + "/"
    if not url.startswith(prefix):
        return None
    name = url[len(prefix) :].split("?", 1)[0]
    return name or None


def blobs_to_check(release: Release, fleet: FleetView, container_url: str | None, revert: bool = False) -> list[str]:
    """The release container's blobs to read before a release starts: a revert's own script (an
    older release's, which may have been deleted since), then every script of the current extension
    that lives in the release container (a rollback writes that extension back, and the VMs
    download its scripts again when they are reimaged). Scripts elsewhere cannot be checked."""
    names: list[str] = []
    if revert and release.kind is ReleaseKind.SCRIPT:
        own = _blob_name(release.blob_url, container_url)
        if own:
            names.append(own)
    current = fleet.model.extension
    if release.kind is ReleaseKind.SCRIPT and current is not None:
        for uri in current.settings.get("fileUris", []) or []:
            name = _blob_name(str(uri), container_url)
            if name and name not in names:
                names.append(name)
    return names


def blob_findings(
    release: Release,
    fleet: FleetView,
    blobs: Mapping[str, BlobRead],
    container_url: str | None,
    revert: bool = False,
) -> list[Finding]:
    """A refusal for each blob of ``blobs_to_check`` that is gone, unreadable or (a revert's own
    script) no longer the content that was released. A blob without a read result is not judged."""
    out: list[Finding] = []
    own = _blob_name(release.blob_url, container_url) if revert else None
    for name in blobs_to_check(release, fleet, container_url, revert):
        read = blobs.get(name)
        if read is None:
            continue
        role = (
            f"the script of {release.label}, which this rollout installs again"
            if name == own
            else "a script of the scale set's current extension, which a rollback restores"
        )
        if read.problem == BLOB_MISSING:
            out.append(
                Finding("blob", Severity.REFUSE, f"blob {name} ({role}) no longer exists in the release container")
            )
        elif read.problem:
            out.append(Finding("blob", Severity.REFUSE, f"blob {name} ({role}) cannot be read: {read.problem}"))
        elif name == own and release.sha256 and read.sha256 != release.sha256:
            out.append(
                Finding(
                    "blob",
                    Severity.REFUSE,
                    f"blob {name} ({role}) has changed since {release.label} was released (sha256 "
                    f"{read.sha256[:12]}, recorded {release.sha256[:12]}): the VMs would run other content",
                )
            )
    return out


# --- all of them -------------------------------------------------------------------------------------


def findings(
    release: Release,
    fleet: FleetView,
    policy: RolloutPolicy,
    extension: ExtensionDefaults,
    images: Mapping[str, str | None],
    *,
    blobs: Mapping[str, BlobRead] | None = None,
    release_container_url: str | None = None,
    revert: bool = False,
) -> list[Finding]:
    """Every finding, in the order of the module doc. ``images`` must hold a result for each image of
    ``images_to_check`` up to the first that failed; ``blobs`` (None: not read) one per blob of
    ``blobs_to_check``."""
    out: list[Finding] = []
    problem = orchestration_problem(fleet)
    if problem is not None:
        out.append(Finding("orchestration", Severity.REFUSE, problem))
    out.extend(policy_findings(policy, len(fleet.instances)))
    out.extend(fleet_findings(fleet, policy))
    problem = replaced_problem(release, fleet, extension)
    if problem is not None:
        out.append(Finding("replaced", Severity.REFUSE, problem))
    else:  # the images are those of a release that replaces something
        problem = image_problem(release, fleet, images)
        if problem is not None:
            out.append(Finding("image", Severity.REFUSE, problem))
    if blobs is not None:
        out.extend(blob_findings(release, fleet, blobs, release_container_url, revert))
    return out


__all__ = [
    "BLOB_MISSING",
    "IMAGE_MISSING",
    "BlobRead",
    "Finding",
    "Severity",
    "blob_findings",
    "blobs_to_check",
    "capacity_problem",
    "effective_batch",
    "extension_problem",
    "findings",
    "fleet_findings",
    "image_problem",
    "images_to_check",
    "policy_findings",
    "refusal",
    "replaced_problem",
    "unavailable_at_once",
]
