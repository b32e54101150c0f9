"""Image releases need read access to the image (ARM's linked authorization), on the fakes.

Pre-flight reads the image first: unreadable (403) or missing (404) is ``Rejected`` with a plain
reason before any write. A write ARM refuses later with LinkedAuthorizationFailed (access removed
after pre-flight) stops the rollout at once, with the reason, instead of retrying to the deadline.
"""

from __future__ import annotations

import json

from rollout.model import EventKind, Phase, Release
from rollout.ports import TransientError
from rollout.releases import build_release, parse_release_name
from tests.fakes import BASE_URL
from tests.service.test_rollouts import TARGET, World, make_world

SUB = "/subscriptions/s"
BASE_IMAGE = "/img/base"  # the fake scale set's image
GALLERY = f"{SUB}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/gal"
VERSION = f"{GALLERY}/images/nginx/versions/2.0.0"
SCALE_SET_RG = f"{SUB}/resourceGroups/rg"


def image_release(version: int, image_id: str) -> Release:
    name = parse_release_name(f"install_nginx.v{version}.image.json")
    assert not isinstance(name, str)
    return build_release(name, f"{BASE_URL}/{name.blob_name}", json.dumps({"imageId": image_id}).encode())


def writes(world: World) -> list[object]:
    return [c for c, _ in world.scale_set.calls if c.startswith(("update_model", "upgrade_instances"))]


def test_an_unreadable_image_is_rejected_at_pre_flight_with_the_grant_to_give() -> None:
    world = make_world(size=3, readable_scopes=(SCALE_SET_RG, BASE_IMAGE))
    world.scale_set.images.add(VERSION)
    outcome = world.service.start_release(image_release(2, VERSION))
    assert outcome.status == "Rejected" and outcome.phase is Phase.REJECTED
    assert outcome.message == (
        f"the function app's identity cannot read image {VERSION} (403 AuthorizationFailed): grant it Reader on "
        "the image's gallery or resource group, e.g. with the infra parameter imageReaderScope"
    )
    assert world.scale_set.calls_of("read_image") == [VERSION]
    assert writes(world) == []  # nothing reached the scale set
    rollout = world.store.get_rollout(TARGET, outcome.rollout_id or "")
    assert rollout is not None and rollout.reason == outcome.message
    assert world.kinds(rollout.id)[-1] == EventKind.REJECTED


def test_a_missing_image_is_rejected_as_not_existing() -> None:
    world = make_world(size=3)
    outcome = world.service.start_release(image_release(2, VERSION))
    assert outcome.status == "Rejected" and outcome.message == f"image {VERSION} does not exist"
    assert writes(world) == []


def test_a_readable_gallery_image_rolls_out() -> None:
    world = make_world(size=3, readable_scopes=(SCALE_SET_RG, BASE_IMAGE, GALLERY))
    world.scale_set.images.add(VERSION)
    rid = world.service.start_release(image_release(2, VERSION)).rollout_id or ""
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=rid) is Phase.SUCCEEDED
    assert all(i.applied.image_id == VERSION for i in world.scale_set.instances.values())


def test_a_transient_error_reading_the_image_leaves_the_release_queued_for_the_next_tick() -> None:
    world = make_world(size=3)
    world.scale_set.images.add(VERSION)
    original = world.scale_set.read_image
    failures = [TransientError("GET image: HTTP 503 (fake)")]

    def flaky(image_id: str) -> None:
        if failures:
            raise failures.pop()
        original(image_id)

    world.scale_set.read_image = flaky  # type: ignore[method-assign]
    outcome = world.service.start_release(image_release(2, VERSION))
    assert outcome.status == "Queued" and "cannot read the release's image" in outcome.message
    assert world.phase(outcome.rollout_id or "") is Phase.QUEUED
    assert world.tick_until(Phase.SUCCEEDED, rollout_id=outcome.rollout_id or "") is Phase.SUCCEEDED


def test_access_removed_after_pre_flight_stops_the_rollout_at_the_first_refused_write() -> None:
    world = make_world(size=3, readable_scopes=(SCALE_SET_RG, BASE_IMAGE, GALLERY))
    world.scale_set.images.add(VERSION)
    original = world.scale_set.read_image

    def then_revoked(image_id: str) -> None:
        original(image_id)
        world.scale_set.readable_scopes = (SCALE_SET_RG, BASE_IMAGE)  # Reader on the gallery removed

    world.scale_set.read_image = then_revoked  # type: ignore[method-assign]
    outcome = world.service.start_release(image_release(2, VERSION))
    rid = outcome.rollout_id or ""
    # The blob invocation itself ends it: one refused write, no retries, nothing upgraded.
    assert world.phase(rid) is Phase.ROLLED_BACK
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None
    assert rollout.rollback_reason.startswith("ARM refused the release's model write: the function app's identity")
    assert f"cannot read image {VERSION} (403 LinkedAuthorizationFailed on the model write)" in rollout.rollback_reason
    assert "imageReaderScope" in rollout.rollback_reason
    assert writes(world) == ["update_model:denied"]
    assert world.scale_set.model.image_id == BASE_IMAGE
    for _ in range(5):
        world.clock.advance(30)
        world.service.tick()
    assert writes(world) == ["update_model:denied"]
    assert world.store.get_target(TARGET) is not None
    assert world.store.get_target(TARGET).active_rollout_id is None  # type: ignore[union-attr]


def test_a_refused_rollback_write_needs_a_human() -> None:
    world = make_world(size=3, readable_scopes=(SCALE_SET_RG, BASE_IMAGE, GALLERY))
    world.scale_set.images.add(VERSION)
    rid = world.service.start_release(image_release(2, VERSION)).rollout_id or ""
    world.tick_until(Phase.BAKING, rollout_id=rid)
    world.scale_set.readable_scopes = (SCALE_SET_RG, GALLERY)  # now the baseline image is unreadable
    world.service.command(rid, "abort", rollback=True, reason="smoke")
    assert world.tick_until(Phase.FAILED, Phase.ROLLED_BACK, rollout_id=rid) is Phase.FAILED
    rollout = world.store.get_rollout(TARGET, rid)
    assert rollout is not None and rollout.reason.startswith("ARM refused the rollback's model write")
    assert f"cannot read image {BASE_IMAGE}" in rollout.reason
    assert writes(world).count("update_model:denied") == 1
    assert any("needs a human" in m for m in world.notifier.messages)


def test_an_unreadable_current_image_is_rejected_too_since_a_rollback_writes_it_back() -> None:
    world = make_world(size=3, readable_scopes=(SCALE_SET_RG, GALLERY))  # not the base image
    world.scale_set.images.add(VERSION)
    outcome = world.service.start_release(image_release(2, VERSION))
    assert outcome.status == "Rejected"
    assert outcome.message.startswith(
        f"the function app's identity cannot read image {BASE_IMAGE} (the scale set's current image, which a "
        "rollback writes back) (403 AuthorizationFailed): grant it Reader"
    )
    assert world.scale_set.calls_of("read_image") == [VERSION, BASE_IMAGE]
    assert writes(world) == []
