"""Many scale sets: the targets loader (document by ETag, tag discovery, or the VMSS_* target) and the
Fleet (per-target services, routing a release blob to its group, recording the releases
that reach no target), over the fakes."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.adapters.scriptcheck import BashSyntaxChecker
from rollout.fleet import DISCOVERY_REFRESH_SECONDS, UNROUTED_KEY, Fleet, TargetsLoad, TargetsLoader, implicit_config
from rollout.groups import GroupOutcome, GroupService
from rollout.model import Phase
from rollout.policy import RolloutPolicy
from rollout.ports import NotFoundError, TransientError
from rollout.releases import MAX_SCRIPT_BYTES, ExtensionDefaults, rollout_id_problem
from rollout.service import OutcomeStatus, RolloutNotFoundError, RolloutService
from rollout.settings import Settings, load_settings
from rollout.targets import Target, TargetRef, TargetsConfig
from rollout.targets_doc import TaggedScaleSet
from rollout.waves import GroupPhase
from tests.fakes import BASE_URL, FakeClock, FakeNotifier, FakeProber, FakeReleaseBlob, FakeScaleSet, FakeStore

SUB = "00000000-0000-0000-0000-000000000000"
ENV = {
    "AZURE_SUBSCRIPTION_ID": SUB,
    "VMSS_RESOURCE_GROUP": "rg",
    "VMSS_NAME": "vmss",
    "StateStorage": "UseDevelopmentStorage=true",
    "ReleaseStorage": "UseDevelopmentStorage=true",
    "BAKE_SECONDS": "60",
}
DOC = b"""
defaultGroup: web
groups:
  - name: web
    waves:
      - targets:
          - {resourceGroup: rg-a, name: canary, policy: {BAKE_SECONDS: 5}}
          - {resourceGroup: rg-b, name: canary}
      - targets:
          - {resourceGroup: rg-c, name: rest}
  - name: api
    waves:
      - targets: [{resourceGroup: rg-api, name: api}]
"""


def settings(**extra: str) -> Settings:
    return load_settings({**ENV, **extra})


class FakeDocument:
    """``DocumentSource`` like ``ReleaseBlobs.read_if_changed``: the ETag changes with each upload."""

    container_name = "init"

    def __init__(self, content: bytes | None) -> None:
        self.content = content
        self.version = 1
        self.downloads = 0
        self.fail: Exception | None = None

    def upload(self, content: bytes) -> None:
        self.content, self.version = content, self.version + 1

    def read_if_changed(self, name: str, etag: str | None, max_bytes: int) -> tuple[str, bytes] | None:
        if self.fail is not None:
            raise self.fail
        if self.content is None:
            raise NotFoundError(f"{name}: not found")
        current = f'"0x{self.version}"'
        if current == etag:
            return None
        self.downloads += 1
        return current, self.content


class FakeDiscovery:
    def __init__(self, found: list[TaggedScaleSet]) -> None:
        self.found = found
        self.calls = 0
        self.fail: Exception | None = None

    def tagged_scale_sets(self, subscription_ids: Any) -> list[TaggedScaleSet]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return list(self.found)


# --- the loader -------------------------------------------------------------------------------------


def test_without_a_document_or_discovery_the_vmss_target_is_the_default_group() -> None:
    s = settings()
    load = TargetsLoader(s).load()
    assert load.problems == () and load.config == implicit_config(s)
    [target] = load.config.targets()
    assert target.key == s.target_key and target.policy == s.policy and target.probe == s.probe
    assert load.config.group("default") is not None and load.config.source == "settings"


def test_the_document_is_read_again_only_when_its_etag_changes() -> None:
    doc = FakeDocument(DOC)
    loader = TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), doc)
    first = loader.load()
    assert first.problems == () and [g.name for g in first.config.groups] == ["web", "api"]
    assert first.config.source == "blob init/targets.yaml" and first.etag == '"0x1"'
    # App settings apply where the document says nothing; its overrides where it does.
    canary_a, canary_b = first.config.group("web").waves[0].targets  # type: ignore[union-attr]
    assert canary_a.policy.bake_seconds == 5 and canary_b.policy.bake_seconds == 60
    assert loader.load() == first and doc.downloads == 1
    doc.upload(DOC.replace(b"name: api\n", b"name: payments\n"))
    second = loader.load()
    assert doc.downloads == 2 and [g.name for g in second.config.groups] == ["web", "payments"]


def test_a_bad_document_gives_no_groups_and_every_problem_until_it_is_fixed() -> None:
    doc = FakeDocument(b"groups:\n  - name: Web\n    waves: []\n")
    loader = TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), doc)
    load = loader.load()
    assert load.config.groups == () and load.config.source == "blob init/targets.yaml"
    assert any("groups[0].name: 'Web' is not a group name" in p for p in load.problems)
    assert any("groups[0].waves: must list at least one wave" in p for p in load.problems)
    doc.upload(DOC)
    assert loader.load().problems == ()


def test_a_missing_document_and_storage_outages_are_problems_only_without_a_good_copy() -> None:
    doc = FakeDocument(None)
    loader = TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), doc)
    assert loader.load().problems == ("the targets document init/targets.yaml (TARGETS_CONFIG) does not exist",)
    doc.upload(DOC)
    good = loader.load()
    assert good.problems == ()
    doc.fail = TransientError("503 ServerBusy")
    assert loader.load() == good  # the copy in hand is kept while storage is unavailable
    cold = TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), doc)
    [problem] = cold.load().problems
    assert "cannot be read just now" in problem and "ServerBusy" in problem


def tagged(rg: str, name: str, **tags: str) -> TaggedScaleSet:
    return TaggedScaleSet(TargetRef(SUB, rg, name), {k.replace("_", "-"): v for k, v in tags.items()})


def test_discovery_forms_groups_and_is_refreshed_on_its_interval() -> None:
    now = [1000.0]
    found = FakeDiscovery(
        [tagged("rg-x", "a", canary_group="web", canary_wave="2"), tagged("rg-x", "b", canary_group="web")]
    )
    loader = TargetsLoader(settings(TARGETS_DISCOVERY_SUBSCRIPTIONS=SUB), None, found, monotonic=lambda: now[0])
    load = loader.load()
    assert load.problems == () and load.config.default_group == "default"
    assert [[t.ref.name for t in w.targets] for w in load.config.group("web").waves] == [["b"], ["a"]]  # type: ignore[union-attr]
    loader.load()
    assert found.calls == 1
    now[0] += DISCOVERY_REFRESH_SECONDS
    found.found.append(tagged("rg-x", "c", canary_group="api"))
    assert [g.name for g in loader.load().config.groups] == ["api", "web"] and found.calls == 2


def test_discovery_and_the_document_together_follow_the_same_rules() -> None:
    doc = FakeDocument(DOC)
    clash = FakeDiscovery([tagged("RG-A", "CANARY", canary_group="tagged")])
    loader = TargetsLoader(settings(TARGETS_CONFIG="t.yaml", TARGETS_DISCOVERY_SUBSCRIPTIONS=SUB), doc, clash)
    load = loader.load()
    assert load.config.groups == ()
    assert any("scale set 'rg-a:canary' is already a target" in p for p in load.problems)
    assert " + tags canary-group/canary-wave in subscription(s) " in load.config.source
    denied = FakeDiscovery([])
    denied.fail = TransientError("403 AuthorizationFailed")
    only_tags = TargetsLoader(settings(TARGETS_DISCOVERY_SUBSCRIPTIONS=SUB), None, denied).load()
    assert only_tags.problems and "Reader on the subscription" in only_tags.problems[0]


# --- the fleet ----------------------------------------------------------------------------------------


class World:
    def __init__(self, load: TargetsLoad) -> None:
        self.store, self.clock = FakeStore(), FakeClock()
        self.scale_sets: dict[str, FakeScaleSet] = {}
        self.built: list[str] = []
        self.unrouted = self._service(UNROUTED_KEY, FakeScaleSet(size=1), RolloutPolicy())
        groups = GroupService(config=load.config, store=self.store, services=self.service_for, clock=self.clock)
        self.fleet = Fleet(load, self.service_for, self.unrouted, groups, script_checker=BashSyntaxChecker())

    def _service(self, key: str, ss: FakeScaleSet, policy: RolloutPolicy) -> RolloutService:
        return RolloutService(
            target_key=key,
            compute=ss,
            prober=FakeProber(ss),
            store=self.store,
            notifier=FakeNotifier(),
            clock=self.clock,
            policy=policy,
            extension=ExtensionDefaults(),
            release_container_url=BASE_URL,
        )

    def service_for(self, target: Target) -> RolloutService:
        if target.key not in self.built:
            self.built.append(target.key)
        ss = self.scale_sets.setdefault(target.key, FakeScaleSet(size=3))
        return self._service(target.key, ss, target.policy)


def document_world() -> World:
    return World(TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), FakeDocument(DOC)).load())


def test_the_per_target_accessor_gives_each_target_its_own_service() -> None:
    world = document_world()
    service = world.fleet.service("rg-a:canary")
    assert service.target_key == "rg-a:canary" and service.policy.bake_seconds == 5
    assert world.fleet.service("rg-b:canary").policy.bake_seconds == 60
    assert [t.key for t, _ in world.fleet.services()] == ["rg-a:canary", "rg-b:canary", "rg-c:rest", "rg-api:api"]
    with pytest.raises(KeyError, match="no target 'rg:vmss' is configured"):
        world.fleet.service("rg:vmss")


def test_a_release_goes_to_its_group_which_starts_the_first_wave() -> None:
    world = document_world()
    blob = FakeReleaseBlob("web/install_nginx.v1.sh", b"#!/bin/bash\necho v1\n")
    outcome = world.fleet.receive_release_blob(blob)
    assert isinstance(outcome, GroupOutcome) and outcome.status is OutcomeStatus.ADVANCED, outcome
    [record] = world.store.list_group_releases("web")
    assert record.id == outcome.release_id and record.release.group == "web" and record.wave == 0
    for key in ("rg-a:canary", "rg-b:canary"):
        [rollout] = world.store.list_rollouts(key)
        assert rollout.phase is Phase.CANARY and rollout.release.group == "web"
        assert rollout.release.blob_name == "install_nginx.v1.sh"
        assert rollout.release.blob_url.endswith("/web/install_nginx.v1.sh")
        # The VMs run the file by its own name; they fetch it from the folder.
        ext = world.scale_sets[key].model.extension
        assert ext is not None and ext.settings["commandToExecute"] == "bash install_nginx.v1.sh"
    assert world.store.list_rollouts("rg-c:rest") == []  # wave 2 starts once wave 1 has succeeded
    # The default group (defaultGroup: web) takes releases at the top level; versions are per group.
    api = world.fleet.receive_release_blob(FakeReleaseBlob("api/install_nginx.v1.sh", b"echo api\n"))
    assert api.status is OutcomeStatus.ADVANCED and world.store.list_rollouts("rg-api:api")[0].release.version == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("payments/install_nginx.v3.sh", "no group 'payments' is configured (groups: web, api)"),
        ("Web/install_nginx.v3.sh", "the release's folder 'Web' is not a group name"),
        ("pay_ments/install_nginx.v3.sh", "the release's folder 'pay_ments' is not a group name"),
    ],
)
def test_a_release_to_no_group_is_rejected_and_recorded_where_the_api_finds_it(name: str, reason: str) -> None:
    world = document_world()
    blob = FakeReleaseBlob(name, b"#!/bin/bash\necho v3\n")
    outcome = world.fleet.receive_release_blob(blob)
    assert outcome.status is OutcomeStatus.REJECTED and reason in outcome.message
    assert outcome.rollout_id is not None and blob.bytes_read == 0  # refused without reading it
    rollout, events = world.fleet.find_rollout(outcome.rollout_id)
    assert rollout.target == UNROUTED_KEY and rollout.phase is Phase.REJECTED and reason in rollout.reason
    assert [r.id for r in world.fleet.unrouted_rollouts()] == [outcome.rollout_id]
    assert events and reason in events[-1].message
    # The same event delivered again is a duplicate, not a second record.
    again = world.fleet.receive_release_blob(blob)
    assert again.status is OutcomeStatus.DUPLICATE and len(world.fleet.unrouted_rollouts()) == 1
    assert all(world.store.list_rollouts(t.key) == [] for t in world.fleet.config.targets())


def test_a_broken_configuration_refuses_every_release_saying_why() -> None:
    doc = FakeDocument(b"groups: []\n")
    world = World(TargetsLoader(settings(TARGETS_CONFIG="targets.yaml"), doc).load())
    assert world.fleet.config.groups == () and world.fleet.services() == ()
    outcome = world.fleet.receive_release_blob(FakeReleaseBlob("install_nginx.v1.sh", b"echo\n"))
    assert outcome.status is OutcomeStatus.REJECTED
    assert "the targets configuration (blob init/targets.yaml) cannot be used" in outcome.message
    assert "groups: must list at least one group" in outcome.message


def test_not_a_release_is_ignored_and_a_vanished_blob_too() -> None:
    world = document_world()
    ignored = world.fleet.receive_release_blob(FakeReleaseBlob("targets.yaml", b"groups: []"))
    assert ignored.status is OutcomeStatus.IGNORED
    gone = FakeReleaseBlob("nope/install_nginx.v1.sh", b"echo\n")
    gone.exists = False
    outcome = world.fleet.receive_release_blob(gone)
    assert outcome.status is OutcomeStatus.IGNORED and world.fleet.unrouted_rollouts() == []


def test_the_implicit_target_receives_releases_as_before() -> None:
    s = settings()
    world = World(TargetsLoader(s).load())
    outcome = world.fleet.receive_release_blob(FakeReleaseBlob("install_nginx.v1.sh", b"echo v1\n"))
    assert outcome.status is OutcomeStatus.ADVANCED and world.built == [s.target_key]
    grouped = world.fleet.receive_release_blob(FakeReleaseBlob("web/install_nginx.v2.sh", b"echo v2\n"))
    assert grouped.status is OutcomeStatus.REJECTED
    assert "no group 'web' is configured (groups: default)" in grouped.message


def test_a_rollout_is_found_in_whichever_target_holds_it() -> None:
    world = document_world()
    world.fleet.receive_release_blob(FakeReleaseBlob("api/install_nginx.v1.sh", b"echo api\n"))
    [rollout] = world.store.list_rollouts("rg-api:api")
    found, _ = world.fleet.find_rollout(rollout.id, first=world.fleet.service("rg-a:canary"))
    assert found.target == "rg-api:api"
    with pytest.raises(RolloutNotFoundError):
        world.fleet.find_rollout("install_nginx-v9-0123456789")


def test_an_empty_configuration_has_nothing_to_list() -> None:
    world = World(TargetsLoad(TargetsConfig(groups=()), problems=("x",)))
    assert world.fleet.services() == () and world.fleet.problems == ("x",)


def test_unusable_content_for_a_group_is_rejected_in_the_group_and_never_started() -> None:
    world = document_world()
    broken = world.fleet.receive_release_blob(FakeReleaseBlob("web/install_nginx.v1.sh", b"if then fi (\n"))
    assert isinstance(broken, GroupOutcome) and broken.status is OutcomeStatus.REJECTED, broken
    huge = FakeReleaseBlob("web/install_nginx.v2.sh", None, size=MAX_SCRIPT_BYTES + 1)
    too_large = world.fleet.receive_release_blob(huge)
    assert isinstance(too_large, GroupOutcome) and too_large.status is OutcomeStatus.REJECTED, too_large
    assert (
        huge.bytes_read == 0 and too_large.release_id is not None and rollout_id_problem(too_large.release_id) is None
    )
    records = {r.id: r for r in world.store.list_group_releases("web")}
    assert set(records) == {broken.release_id, too_large.release_id}
    assert all(r.phase is GroupPhase.REJECTED for r in records.values())
    # Each scale set of the group records both refusals in its own history; none was started.
    for target in world.fleet.config.group("web").targets():  # type: ignore[union-attr]
        rows = world.store.list_rollouts(target.key)
        assert {r.id for r in rows} == set(records) and all(r.phase is Phase.REJECTED for r in rows)
    assert all(not ss.calls_of("update_model") for ss in world.scale_sets.values())
    # The same upload delivered again is a duplicate of the same record.
    again = world.fleet.receive_release_blob(huge)
    assert isinstance(again, GroupOutcome) and again.status is OutcomeStatus.DUPLICATE
    assert again.release_id == too_large.release_id
