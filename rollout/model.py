"""The rollout's vocabulary: frozen dataclasses, no I/O.

State is changed with ``dataclasses.replace`` only; the Tables adapter owns the conversion to and
from entities (``rollout.adapters.tables``). Times are timezone-aware UTC ``datetime``s passed in by
the caller: nothing here reads the clock.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollout.judge import JudgeState
from rollout.signals import InstanceSignals


class Phase(str, enum.Enum):
    """Where a rollout is. The transitions: docs/design.md, "Phases"."""

    QUEUED = "Queued"
    CANARY = "Canary"
    BAKING = "Baking"
    PROMOTING = "Promoting"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    FAILED = "Failed"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def is_active(self) -> bool:
        """Active rollouts hold the scale set: the timer advances them and no other may start."""
        return self in ACTIVE_PHASES


ACTIVE_PHASES = frozenset({Phase.CANARY, Phase.BAKING, Phase.PROMOTING, Phase.PAUSED, Phase.ROLLING_BACK, Phase.FAILED})
TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.REJECTED})


class ReleaseKind(str, enum.Enum):
    SCRIPT = "script"  # a new CustomScript extension script (install_nginx.v7.sh)
    IMAGE = "image"  # a new managed image id (install_nginx.v7.image.json manifest)


@dataclass(frozen=True)
class Release:
    """One release as parsed from the blob that announced it."""

    kind: ReleaseKind
    app: str  # "install_nginx"
    version: int  # 7, compared numerically
    blob_name: str  # "install_nginx.v7.sh"
    blob_url: str  # where the VMs fetch the script from (or where the manifest was)
    sha256: str  # of the blob content: identifies the release for duplicate detection
    image_id: str | None = None  # IMAGE releases only
    group: str | None = None  # the group's folder it was uploaded to; None: the default group (top level)

    @property
    def label(self) -> str:
        return f"{self.app} v{self.version}"


@dataclass(frozen=True)
class ExtensionSpec:
    """The CustomScript extension as it stands (or should stand) on the scale set model.

    ``protected_settings`` cannot be read back from Azure. ``None`` means "not known": the rollout
    that wrote it is not ours. ``protected_settings_known`` distinguishes "known to be empty" from that.

    The fields are every writable property of ``VirtualMachineScaleSetExtensionProperties`` in the REST
    spec (tests/data/azure-rest-specs/ComputeRP.vmss-subset.json, api-version 2026-04-01; only the
    read-only ``provisioningState`` is left out), so an extension read from ARM and written back is
    the same extension: a child-resource PUT replaces all of it. ``None`` in the optional ones means
    "absent in ARM's answer" and is not sent.
    """

    name: str
    publisher: str
    type: str
    type_handler_version: str
    settings: Mapping[str, Any]
    protected_settings: Mapping[str, Any] | None = None
    auto_upgrade_minor_version: bool = True
    force_update_tag: str | None = None
    enable_automatic_upgrade: bool | None = None
    provision_after_extensions: tuple[str, ...] | None = None
    suppress_failures: bool | None = None
    # A KeyVaultSecretReference {"secretUrl", "sourceVault": {"id"}}: the protected settings live in Key Vault.
    protected_settings_from_key_vault: Mapping[str, Any] | None = None

    @property
    def provision_after_list(self) -> list[str] | None:
        """``provision_after_extensions`` as JSON holds it: a list, or null when absent on the scale set."""
        return None if self.provision_after_extensions is None else list(self.provision_after_extensions)

    def same_public_model(self, other: ExtensionSpec | None) -> bool:
        """True when ``other`` is this extension as far as Azure lets us read it back."""
        if other is None:
            return False
        return (
            self.name == other.name
            and self.publisher == other.publisher
            and self.type == other.type
            and self.type_handler_version.split(".")[0] == other.type_handler_version.split(".")[0]
            and dict(self.settings) == dict(other.settings)
            and (self.force_update_tag or None) == (other.force_update_tag or None)
        )


@dataclass(frozen=True)
class ModelSpec:
    """The part of the scale set model a release changes: the extension, the image, or both."""

    extension: ExtensionSpec | None = None
    image_id: str | None = None

    def matches(self, observed: ModelSpec) -> bool:
        """Does the observed (read-back) model already hold this spec?

        Only the parts this spec sets are compared: a script release says nothing about the image.
        """
        if self.extension is not None and not self.extension.same_public_model(observed.extension):
            return False
        if self.image_id is not None and (observed.image_id or "").lower() != self.image_id.lower():
            return False
        return True


class Health(str, enum.Enum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UPDATING = "Updating"  # an upgrade or reimage is running: neither healthy nor a failure yet
    FAILED = "Failed"  # the extension or provisioning reported failure: no point waiting


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "200 in 12 ms", "connection refused", "body did not match 'Welcome'"
    latency_ms: float | None = None  # of a successful probe


@dataclass(frozen=True)
class InstanceView:
    """One scale set instance as observed in one tick."""

    instance_id: str
    latest_model_applied: bool
    provisioning_state: str  # Succeeded, Updating, Creating, Failed, ...
    power_state: str | None = None  # "running", "stopped", ... (PowerState/<x> code)
    extension_status: str | None = None  # Succeeded, Failed, Transitioning, or None if absent
    extension_message: str = ""
    vm_health: str | None = None  # HealthState/<x> from the application health extension
    private_ip: str | None = None
    probe: ProbeResult | None = None
    computer_name: str | None = None  # the guest's host name (instanceView.computerName), as logs name it


@dataclass(frozen=True)
class FleetView:
    """The scale set in one observation: its model and its instances."""

    model: ModelSpec
    provisioning_state: str  # of the scale set itself; "Updating" while a model write runs
    instances: tuple[InstanceView, ...]
    orchestration_mode: str = "Uniform"
    upgrade_mode: str = "Manual"
    # Whether each instance's ``latest_model_applied`` was read from ARM (Uniform: the scale set VM's
    # latestModelApplied). False for Flexible VMs, whose REST shape has no such property: the service
    # then takes the reading from the rollout's records (``rollout.orchestration.with_recorded_models``).
    model_applied_reported: bool = True
    # Per-instance signals since the previous observation (``rollout.ports.SignalSource``), by instance id;
    # empty when no source is configured: the canary judge then counts the probes only.
    signals: Mapping[str, InstanceSignals] = field(default_factory=dict)

    def by_id(self) -> dict[str, InstanceView]:
        return {i.instance_id: i for i in self.instances}


@dataclass(frozen=True)
class Rollout:
    """The persisted status of one release on one scale set. It *is* the state (Argo-style)."""

    id: str
    target: str  # the scale set key (PartitionKey)
    release: Release
    phase: Phase
    desired: ModelSpec  # what the release writes on the scale set model
    baseline: ModelSpec | None  # what rollback restores; recorded at start
    created_at: datetime
    updated_at: datetime
    phase_since: datetime
    last_progress_at: datetime
    canary_ids: tuple[str, ...] = ()
    batch_ids: tuple[str, ...] = ()  # the batch being upgraded now (or the canary)
    batch_started_at: datetime | None = None
    batch_number: int = 0
    upgraded_ids: tuple[str, ...] = ()  # every instance this rollout moved to the new model
    rollback_ids: tuple[str, ...] = ()  # instances moved back to the baseline so far
    reimaged_ids: tuple[str, ...] = ()  # instances whose reimage call was sent and confirmed
    # A reimage saved before its call (save, then act) and not yet confirmed sent: two-phase, because
    # nothing the next observation shows tells a reimage sent from one never sent (docs/design.md).
    reimage_pending: tuple[str, ...] = ()
    reimage_requested_at: datetime | None = None  # when it was (last) sent; None = send it again now
    # A digest of the parts of the scale set model this release does not own (the image during a script
    # release, the extension during an image release), taken once the release's own part is on the model.
    # A different digest later means someone edited the model outside the rollout. "" = not taken yet.
    foreign_model: str = ""
    # The instance ids the scale set had when the rollout started. Any other id was created during the
    # rollout, from whatever model the scale set had then (the release, a hand edit): a rollback moves
    # such an instance back when it is not on the restored baseline. () = not recorded (older rows).
    known_ids: tuple[str, ...] = ()
    # Instances whose last upgrade call is not known to have reached ARM. Where the scale set does not
    # report latestModelApplied (Flexible), every upgrade is saved here with its decision and leaves once
    # its call has reached ARM (two-phase: ``rollout.orchestration.decide_with_records``); elsewhere only
    # calls that did not reach ARM (throttled, refused, fenced) are kept here. () = none.
    unsent_ids: tuple[str, ...] = ()
    unhealthy_streak: int = 0
    # Where ``resume`` returns a Paused rollout to (the phase it was paused in); set only while Paused.
    resume_to: Phase | None = None
    # The phase a Failed rollout stopped in (``retry`` goes on from there); set only while Failed.
    # Both are stored in the one ``paused_from`` property they replace (``rollout.adapters.tables``).
    failed_from: Phase | None = None
    hold_until: datetime | None = None  # ARM throttled us: no scale set write before this time
    skip_bake: bool = False
    promote_full: bool = False
    reason: str = ""
    rollback_reason: str = ""
    # A revert: a group release halted and returns the scale set to this (older) release, which the
    # not-newer check then allows (``RolloutService.start_revert``).
    revert: bool = False
    # The canary judge's tallies and last verdict during the bake (``rollout.judge``); None before the bake.
    judge: JudgeState | None = None
    # Instances that were unhealthy (not failed) when their batch was chosen and have not been healthy on the
    # release since: not the release's doing, so they do not count against it (docs/safety.md).
    unhealthy_before: tuple[str, ...] = ()
    etag: str | None = field(default=None, compare=False)

    def evolve(self, **changes: Any) -> Rollout:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TargetRecord:
    """One row per scale set: who holds it and what is stable on it."""

    key: str
    active_rollout_id: str | None = None
    stable_version: int | None = None
    stable_release: Release | None = None
    stable_model: ModelSpec | None = None
    updated_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)


class EventKind(enum.StrEnum):
    """What an audit-trail line records. The value is what the Tables row and the HTTP API show."""

    RECEIVED = "Received"  # a release blob was recorded as a rollout
    REJECTED = "Rejected"  # a release was rejected (not newer, pre-flight, unreadable, superseded)
    PHASE_CHANGED = "PhaseChanged"  # "<before> -> <after>: <reason>"
    BASELINE_WARNING = "BaselineWarning"  # the baseline's protected settings are not known
    PREFLIGHT_WARNING = "PreflightWarning"  # a pre-flight finding that warns (rollout.preflight); it started anyway
    ADOPTED = "Adopted"  # an orphan took the free scale set again
    ORPHANED = "Orphaned"  # a started rollout not holding the scale set was stopped
    MODEL_UPDATE_ISSUED = "ModelUpdateIssued"  # the release's (or the baseline's) model is written
    INSTANCES_ON_RELEASE = "InstancesOnRelease"  # instances found on the release without our upgrade
    CANARY_STARTED = "CanaryStarted"
    CANARY_LOST = "CanaryLost"  # a canary instance left the scale set
    HEALTH_CHECK_FAILED = "HealthCheckFailed"  # one unhealthy observation (a streak counts them)
    BATCH_STARTED = "BatchStarted"
    BATCH_SUCCEEDED = "BatchSucceeded"
    BATCH_SHRUNK = "BatchShrunk"  # batch instances left the scale set
    BATCH_TRIMMED = "BatchTrimmed"  # a re-issue left instances out to keep within the budget
    UPGRADE_ISSUED = "UpgradeIssued"  # a stalled upgrade was (re)issued
    PROMOTED = "Promoted"  # the operator's promote or promote-full
    PROMOTE_FULL = "PromoteFull"  # every remaining instance is upgraded at once
    ROLLBACK_UPGRADE_STARTED = "RollbackUpgradeStarted"
    REIMAGE_STARTED = "ReimageStarted"
    REIMAGE_REISSUED = "ReimageReissued"
    ACTION_FAILED = "ActionFailed"  # an ARM or notification call failed
    LATE_WRITE = "LateWrite"  # an ARM write landed after another host changed the phase
    STATE_TOO_LARGE = "StateTooLarge"  # the next state could not be stored; nothing was acted on
    # A group release crossing its waves (rollout.waves); the event's data names the target.
    TARGET_STARTED = "TargetStarted"  # the release was started on a target of the current wave
    WAVE_SUCCEEDED = "WaveSucceeded"  # every target of a wave succeeded
    WAVE_STARTED = "WaveStarted"  # the wave bake passed; the next wave starts
    REVERT_STARTED = "RevertStarted"  # a target goes back to its previous release (a halt)
    TARGET_STEERED = "TargetSteered"  # an operator verb on one target of a group release
    JUDGED = "Judged"  # the canary judge's conclusive verdict (Pass, Marginal, Fail), its figures in the data


@dataclass(frozen=True)
class RolloutEvent:
    """One line of the audit trail: what happened, to which rollout, why, and the evidence."""

    rollout_id: str
    target: str
    at: datetime
    kind: EventKind
    message: str
    actor: str = "controller"
    phase: Phase | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
