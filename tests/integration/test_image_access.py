"""Image releases and read access to the image, through the real adapter and the function app,
against the ARM emulator over HTTPS enforcing linked authorization (``readable_scopes``).

The function app's identity has Virtual Machine Contributor on the scale set only unless it is
granted Reader on the image's gallery or resource group (the infra parameter imageReaderScope).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from rollout.adapters.compute import AzureCompute, parse_image_id, port_error_from
from rollout.model import ModelSpec
from rollout.ports import AccessDeniedError, NotFoundError
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID, StaticTokenCredential
from tests.integration import test_function_app_rollout as twin
from tests.integration.test_function_app_rollout import App, pages

pytestmark = pytest.mark.integration

app = twin.app  # the function app on Azurite and the emulator (see test_function_app_rollout.py)

RG = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-canary"
BASE = f"{RG}/providers/Microsoft.Compute/images/nginx-base-image"
GALLERY = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/gal"
VERSION = f"{GALLERY}/images/nginx/versions/2.0.0"
OTHER_SUB_IMAGE = (
    "/subscriptions/99999999-0000-0000-0000-000000000000/resourceGroups/shared/providers/Microsoft.Compute/images/x"
)


# -- the adapter -----------------------------------------------------------------------------------------


def test_image_ids_parse_into_their_parts() -> None:
    assert parse_image_id(BASE) == {
        "sub": SUBSCRIPTION_ID,
        "rg": "rg-canary",
        "image": "nginx-base-image",
    }
    assert parse_image_id(VERSION) == {
        "sub": SUBSCRIPTION_ID,
        "rg": "rg-images",
        "gallery": "gal",
        "definition": "nginx",
        "version": "2.0.0",
    }
    assert parse_image_id(f"{GALLERY}/images/nginx")["definition"] == "nginx"  # type: ignore[index]
    assert parse_image_id("/images/nginx-v1") is None
    assert parse_image_id(f"{GALLERY}/images/nginx/versions/2.0.0/extra") is None


def test_a_403_maps_to_access_denied_with_arm_code() -> None:
    from tests.integration.test_compute_adapter import _http_error

    body = b'{"error": {"code": "LinkedAuthorizationFailed", "message": "has permission ... linked scope(s)"}}'
    mapped = port_error_from(_http_error(403, body), "write image of web")
    assert isinstance(mapped, AccessDeniedError) and mapped.code == "LinkedAuthorizationFailed"
    assert "HTTP 403 LinkedAuthorizationFailed" in str(mapped)


@pytest.fixture
def compute(arm_emulator: Any, make_scale_set: Any) -> Iterator[tuple[AzureCompute, Any]]:
    handle = make_scale_set(2, serve=False, image_id=BASE)
    adapter = AzureCompute(
        subscription_id=SUBSCRIPTION_ID,
        resource_group=handle.resource_group,
        vmss_name=handle.name,
        extension_name="CustomScript",
        arm_endpoint=arm_emulator.url,
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        ca_bundle=arm_emulator.ca_bundle,
        max_retries=0,
        lro_poll_interval_s=0.05,
    )
    with adapter:
        yield adapter, handle


def test_read_image_gets_each_kind_of_image_with_the_sdk(arm_emulator: Any, compute: Any) -> None:
    adapter, _ = compute
    arm_emulator.add_image(VERSION)
    arm_emulator.add_image(OTHER_SUB_IMAGE)
    arm_emulator.clear_requests()
    adapter.read_image(BASE)
    adapter.read_image(VERSION)
    adapter.read_image(f"{GALLERY}/images/nginx")
    adapter.read_image(OTHER_SUB_IMAGE)  # another subscription: its own client
    assert [r.path for r in arm_emulator.requests("GET")] == [
        BASE,
        VERSION,
        f"{GALLERY}/images/nginx",
        OTHER_SUB_IMAGE,
    ]
    with pytest.raises(NotFoundError):
        adapter.read_image(f"{GALLERY}/images/nginx/versions/9.9.9")
    arm_emulator.set_readable_scopes([RG])
    with pytest.raises(AccessDeniedError) as denied:
        adapter.read_image(VERSION)
    assert denied.value.code == "AuthorizationFailed"


def test_a_linked_authorization_failure_at_the_model_write_says_what_to_grant(arm_emulator: Any, compute: Any) -> None:
    adapter, handle = compute
    arm_emulator.set_readable_scopes([RG])
    with pytest.raises(AccessDeniedError) as denied:
        adapter.update_model(ModelSpec(image_id=VERSION))
    assert denied.value.code == "LinkedAuthorizationFailed"
    assert str(denied.value) == (
        f"the function app's identity cannot read image {VERSION} (403 LinkedAuthorizationFailed on the model "
        "write): grant it Reader on the image's gallery or resource group, e.g. with the infra parameter "
        "imageReaderScope"
    )
    assert isinstance(denied.value.__cause__, AccessDeniedError)
    assert isinstance(denied.value.__cause__.__cause__, HttpResponseError)
    assert handle.state.model.image_id == BASE


# -- through the function app -----------------------------------------------------------------------------


@pytest.fixture
def image_app(app: App, make_scale_set: Any, monkeypatch: pytest.MonkeyPatch) -> App:
    handle = make_scale_set(
        3,
        image_id=BASE,
        extension_settings={"fileUris": ["https://x/init/install_nginx.sh"], "commandToExecute": "bash x"},
    )
    monkeypatch.setenv("VMSS_NAME", handle.name)
    app.handle = handle  # type: ignore[attr-defined]
    return app


def upload_image_release(app: App, version: int, image_id: str) -> dict[str, Any]:
    app.upload(f"install_nginx.v{version}.image.json", json.dumps({"imageId": image_id}).encode())
    return next(r for r in app.rollouts() if r["version"] == version)


def test_an_unreadable_image_is_rejected_and_no_write_reaches_arm(image_app: App, arm_emulator: Any) -> None:
    arm_emulator.add_image(VERSION)
    arm_emulator.set_readable_scopes([RG])  # the scale set's resource group only: no Reader on the gallery
    arm_emulator.clear_requests()
    rollout = upload_image_release(image_app, 7, VERSION)
    assert rollout["phase"] == "Rejected"
    assert rollout["reason"] == (
        f"the function app's identity cannot read image {VERSION} (403 AuthorizationFailed): grant it Reader on "
        "the image's gallery or resource group, e.g. with the infra parameter imageReaderScope"
    )
    assert arm_emulator.requests("PATCH") == [] and arm_emulator.requests("PUT") == []
    assert arm_emulator.requests("POST") == []
    [get] = arm_emulator.requests("GET", path_contains="/galleries/")
    assert get.status == 403


def test_a_missing_image_is_rejected_as_not_existing(image_app: App, arm_emulator: Any) -> None:
    rollout = upload_image_release(image_app, 7, f"{GALLERY}/images/nginx/versions/3.0.0")
    assert rollout["phase"] == "Rejected"
    assert rollout["reason"] == f"image {GALLERY}/images/nginx/versions/3.0.0 does not exist"
    assert arm_emulator.requests("PATCH") == []


def test_a_readable_image_still_rolls_out(image_app: App, arm_emulator: Any) -> None:
    handle = image_app.handle  # type: ignore[attr-defined]
    arm_emulator.add_image(VERSION)
    arm_emulator.set_readable_scopes([RG, GALLERY])  # what imageReaderScope grants
    rollout = upload_image_release(image_app, 8, VERSION)
    detail = image_app.tick_until(rollout["id"], "Succeeded", "RolledBack", "Failed", "Rejected")
    assert detail["phase"] == "Succeeded", detail["reason"]
    assert all(inst.applied.image_id == VERSION for inst in handle.state.instances.values())
    assert all("Welcome to nginx" in page for page in pages(handle).values())
    assert [r.status for r in arm_emulator.requests("PATCH")] == [200]


def test_access_removed_after_pre_flight_stops_at_the_first_refused_write(
    image_app: App, arm_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = image_app.handle  # type: ignore[attr-defined]
    arm_emulator.add_image(VERSION)
    arm_emulator.set_readable_scopes([RG, GALLERY])
    original: Callable[[AzureCompute, str], None] = AzureCompute.read_image

    def then_revoked(self: AzureCompute, image_id: str) -> None:
        original(self, image_id)
        arm_emulator.set_readable_scopes([RG])  # someone removes the Reader role right after pre-flight

    monkeypatch.setattr(AzureCompute, "read_image", then_revoked)
    rollout = upload_image_release(image_app, 9, VERSION)
    # The blob invocation itself ended it: one refused PATCH, no retries, nothing upgraded.
    assert rollout["phase"] == "RolledBack"
    detail = image_app.rollout(rollout["id"])
    assert detail["rollbackReason"].startswith("ARM refused the release's model write: the function app's identity")
    assert "403 LinkedAuthorizationFailed on the model write" in detail["rollbackReason"]
    assert "imageReaderScope" in detail["rollbackReason"]
    for _ in range(3):
        image_app.tick()
    assert [r.status for r in arm_emulator.requests("PATCH")] == [403]
    assert arm_emulator.requests("POST", "/manualupgrade") == []
    assert handle.state.model.image_id == BASE
