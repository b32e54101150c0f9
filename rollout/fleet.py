"""The app's targets and one ``RolloutService`` per target: where a release goes, and who steers what.

``Fleet`` (not to be confused with ``FleetView``, the instances of one scale set) is what the triggers
use when there are many scale sets (README, "Targets, groups and waves"; docs/design.md, "Targets and
groups"):

* ``config`` is the ``TargetsConfig`` in force, ``problems`` why it could not be loaded (then it has no
  groups, every release is refused with that reason, and ``GET /api/targets`` shows them);
* ``service(target_key)`` is THE per-target accessor: the ``RolloutService`` of one target (its scale set,
  policy and probe; the store, clock and blobs are shared). ``services()`` lists them in group and wave
  order. The wave engine and the queue fan-out build on these two;
* ``route`` / ``receive_release_blob`` send a release blob to its group (``groups``, the wave engine), or
  record why not.

``TargetsLoader`` reads the configuration: the targets document (``TARGETS_CONFIG``, a blob in the release
container, re-read only when its ETag changes), tag discovery (``TARGETS_DISCOVERY_SUBSCRIPTIONS``,
re-listed every ``DISCOVERY_REFRESH_SECONDS``), or neither: today's ``VMSS_*`` scale set as the implicit
default group of one target. It never raises: a problem is data.

Releases that reach no target (a folder that is no group, a broken configuration) are recorded as
Rejected rollouts in the partition ``UNROUTED_KEY`` of the rollouts table, which no target key can be
(target keys are ``<resource group>:<name>``: they always hold a ':').
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rollout.groups import GroupOutcome, GroupService
from rollout.intake import Vanished, read_release_blob
from rollout.model import Phase, Rollout, RolloutEvent
from rollout.ports import ConcurrencyError, NotFoundError, PortError, ReleaseBlob, ScriptChecker
from rollout.releases import ReleaseName, parse_release_name, unread_release, unread_rollout_id
from rollout.service import Outcome, OutcomeStatus, RolloutNotFoundError, RolloutService
from rollout.settings import Settings
from rollout.targets import Group, Target, TargetRef, TargetsConfig, single_target_config
from rollout.targets_doc import (
    MAX_DOCUMENT_BYTES,
    TaggedScaleSet,
    TargetDefaults,
    TargetsDocumentError,
    groups_from_tags,
    load_document,
    merge_groups,
    route,
)

log = logging.getLogger(__name__)

UNROUTED_KEY = "unrouted"
DISCOVERY_REFRESH_SECONDS = 300.0


class DocumentSource(Protocol):
    """Where the targets document is read (``rollout.adapters.blobs.ReleaseBlobs``)."""

    container_name: str

    def read_if_changed(self, name: str, etag: str | None, max_bytes: int) -> tuple[str, bytes] | None: ...


class Discovery(Protocol):
    """Tag discovery (``rollout.adapters.discovery.ArmDiscovery``)."""

    def tagged_scale_sets(self, subscription_ids: Sequence[str]) -> list[TaggedScaleSet]: ...


@dataclass(frozen=True)
class TargetsLoad:
    """A configuration as loaded: no groups and the ``problems`` when it cannot be used."""

    config: TargetsConfig
    problems: tuple[str, ...] = ()
    etag: str | None = None  # the document's, when there is one


def implicit_config(settings: Settings) -> TargetsConfig:
    """Today's ``VMSS_*`` settings: the default group of one target with the app's policy and probe."""
    ref = TargetRef(settings.subscription_id, settings.resource_group, settings.vmss_name)
    return single_target_config(ref, settings.policy, settings.probe)


class TargetsLoader:
    """Loads the configuration from settings, the document and discovery; caches both. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        document: DocumentSource | None = None,
        discovery: Discovery | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._document = document
        self._discovery = discovery
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._defaults = TargetDefaults(settings.subscription_id, settings.policy, settings.probe)
        self._etag: str | None = None
        self._declared: TargetsConfig | None = None
        self._declared_problems: tuple[str, ...] = ()
        self._found: list[Group] | None = None
        self._found_problems: tuple[str, ...] = ()
        self._found_at: float | None = None

    @property
    def source(self) -> str:
        parts = []
        if self.settings.targets_config:
            container = self._document.container_name if self._document is not None else "?"
            parts.append(f"blob {container}/{self.settings.targets_config}")
        if self.settings.targets_discovery_subscriptions:
            subs = ", ".join(self.settings.targets_discovery_subscriptions)
            parts.append(f"tags canary-group/canary-wave in subscription(s) {subs}")
        return " + ".join(parts) or "settings (VMSS_RESOURCE_GROUP, VMSS_NAME)"

    def load(self) -> TargetsLoad:
        settings = self.settings
        if not settings.targets_config and not settings.targets_discovery_subscriptions:
            return TargetsLoad(implicit_config(settings))
        with self._lock:
            if settings.targets_config:
                self._read_document(settings.targets_config)
            if settings.targets_discovery_subscriptions:
                self._discover(settings.targets_discovery_subscriptions)
            problems = [*self._declared_problems, *self._found_problems]
            config = TargetsConfig(groups=(), source=self.source)
            if not problems:
                try:
                    config = merge_groups(self._declared, self._found or [], self.source)
                except TargetsDocumentError as exc:
                    problems.extend(exc.problems)
            if problems:
                log.error("the targets configuration (%s) cannot be used: %s", self.source, "; ".join(problems))
            return TargetsLoad(config, tuple(problems), self._etag)

    def _read_document(self, name: str) -> None:
        where = f"{self._document.container_name if self._document else '?'}/{name}"
        if self._document is None:
            self._declared_problems = (f"TARGETS_CONFIG names {where}, but ReleaseStorage is not set",)
            return
        try:
            changed = self._document.read_if_changed(name, self._etag, MAX_DOCUMENT_BYTES)
        except NotFoundError:
            self._set_declared(None, (f"the targets document {where} (TARGETS_CONFIG) does not exist",), None)
            return
        except ValueError as exc:  # too large (ReleaseTooLargeError), or a name the adapter refuses
            self._set_declared(None, (f"the targets document {where} cannot be read: {exc}",), None)
            return
        except (ConcurrencyError, PortError) as exc:
            # Storage is unavailable or the blob changed while read: keep what was loaded, if anything.
            log.warning("reading the targets document %s failed: %s", where, exc)
            if self._declared is None and not self._declared_problems:
                self._declared_problems = (f"the targets document {where} cannot be read just now: {exc}",)
            return
        if changed is None:
            return
        etag, content = changed
        try:
            config = load_document(name, content, self._defaults, source=f"blob {where}")
        except TargetsDocumentError as exc:
            self._set_declared(None, exc.problems, etag)
            return
        log.info("loaded the targets document %s (ETag %s): %d group(s)", where, etag, len(config.groups))
        self._set_declared(config, (), etag)

    def _set_declared(self, config: TargetsConfig | None, problems: Sequence[str], etag: str | None) -> None:
        self._declared, self._declared_problems, self._etag = config, tuple(problems), etag

    def _discover(self, subscriptions: Sequence[str]) -> None:
        now = self._monotonic()
        if self._found_at is not None and now - self._found_at < DISCOVERY_REFRESH_SECONDS:
            return
        if self._discovery is None:
            self._found_problems = ("TARGETS_DISCOVERY_SUBSCRIPTIONS is set but discovery is not wired",)
            return
        try:
            tagged = self._discovery.tagged_scale_sets(subscriptions)
        except PortError as exc:
            log.warning("tag discovery failed: %s", exc)
            if self._found is None:
                self._found_problems = (f"tag discovery failed (the identity needs Reader on the subscription): {exc}",)
            return
        groups, problems = groups_from_tags(tagged, self._defaults)
        self._found, self._found_problems, self._found_at = groups, tuple(problems), now


class Fleet:
    """The configuration in force and its per-target services (module doc). Cheap: one per call."""

    def __init__(
        self,
        load: TargetsLoad,
        service_for: Callable[[Target], RolloutService],
        unrouted: RolloutService,
        groups: GroupService,
        script_checker: ScriptChecker | None = None,
    ) -> None:
        self.config = load.config
        self.groups = groups
        self._checker = script_checker
        self.problems = load.problems
        self.etag = load.etag
        self._service_for = service_for
        self.unrouted = unrouted
        self._targets = {t.key: t for t in load.config.targets()}

    @property
    def source(self) -> str:
        return self.config.source

    def target(self, target_key: str) -> Target | None:
        return self._targets.get(target_key)

    def service(self, target_key: str) -> RolloutService:
        """The ``RolloutService`` of one target (``TargetRef.key``); ``KeyError`` for a key not configured."""
        target = self._targets.get(target_key)
        if target is None:
            raise KeyError(f"no target {target_key!r} is configured")
        return self._service_for(target)

    def services(self) -> tuple[tuple[Target, RolloutService], ...]:
        """Every target once with its service, in group and wave order."""
        return tuple((t, self._service_for(t)) for t in self.config.targets())

    def route(self, name: ReleaseName) -> Group | str:
        """The group a parsed release goes to, or why none (``rollout.targets_doc.route``)."""
        if self.problems:
            shown = "; ".join(self.problems[:5]) + ("; ..." if len(self.problems) > 5 else "")
            return f"the targets configuration ({self.source}) cannot be used, so no release is routed: {shown}"
        return route(self.config, name.group)

    def receive_release_blob(self, blob: ReleaseBlob) -> Outcome | GroupOutcome:
        """A release blob landed: its group receives it (``GroupService``: wave 1 starts at once, each
        target with its own canary; the later waves follow). The blob is read once, here.

        Not a release by name: Ignored, as before. No group for it: Rejected, recorded in the
        ``UNROUTED_KEY`` partition (shown by ``GET /api/targets`` and ``GET /api/rollouts/{id}``).
        Unusable content (too large, a syntax error): Rejected in the group's releases."""
        parsed = parse_release_name(blob.name)
        if isinstance(parsed, str):
            log.info("ignored blob %r: %s", blob.name, parsed)
            return Outcome(OutcomeStatus.IGNORED, parsed)
        group = self.route(parsed)
        if isinstance(group, str):
            return self._reject_unrouted(blob, parsed, group)
        read = read_release_blob(blob, parsed, self._checker)
        if isinstance(read, Vanished):
            return Outcome(OutcomeStatus.IGNORED, read.reason)
        if read.problem is not None:
            return self.groups.reject_release(group.name, read.release, read.problem, release_id=read.rollout_id)
        return self.groups.receive_release(group.name, read.release)

    def _reject_unrouted(self, blob: ReleaseBlob, parsed: ReleaseName, reason: str) -> Outcome:
        try:
            version = blob.version()
        except NotFoundError:
            return Outcome(OutcomeStatus.IGNORED, f"{blob.name} no longer exists")
        rollout_id = unread_rollout_id(parsed, version.etag)
        log.warning("release %s reaches no target: %s", blob.name, reason)
        return self.unrouted.reject_release(unread_release(parsed, blob.url), reason, rollout_id=rollout_id)

    def find_rollout(self, rollout_id: str, first: RolloutService | None = None) -> tuple[Rollout, list[RolloutEvent]]:
        """A rollout and its events by id, in whichever target (or the unrouted partition) holds it;
        ``first`` is asked first. ``RolloutNotFoundError`` when none does."""
        asked: set[str] = set()
        for service in (first, *(s for _, s in self.services()), self.unrouted):
            if service is None or service.target_key in asked:
                continue
            asked.add(service.target_key)
            try:
                return service.get(rollout_id)
            except RolloutNotFoundError:
                continue
        raise RolloutNotFoundError(rollout_id)

    def unrouted_rollouts(self, limit: int = 20) -> list[Rollout]:
        """The latest releases that reached no target, newest first."""
        _, rollouts = self.unrouted.list()
        ordered = sorted(rollouts, key=lambda r: r.created_at, reverse=True)
        return [r for r in ordered if r.phase is Phase.REJECTED][:limit]
