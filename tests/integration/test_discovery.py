"""Tag discovery through the real azure-mgmt-compute client against the ARM emulator: Virtual Machine Scale
Sets - List All (VirtualMachineScaleSets_ListAll), paged, in the official shape; tagged scale sets form
groups; a subscription the identity cannot read is a clear port error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from rollout.adapters.compute import StaticTokenCredential
from rollout.adapters.discovery import ArmDiscovery, tagged_scale_set
from rollout.ports import AccessDeniedError, NotFoundError, PortError
from rollout.targets_doc import TargetDefaults, groups_from_tags
from tests.fixtures.emulator import EMULATOR_TOKEN, SUBSCRIPTION_ID
from tests.restspec import SPEC_FILE, SpecSchemas

pytestmark = pytest.mark.integration


@pytest.fixture
def discovery(arm_emulator: Any) -> Iterator[ArmDiscovery]:
    d = ArmDiscovery(
        arm_endpoint=arm_emulator.url,
        credential=StaticTokenCredential(EMULATOR_TOKEN),
        ca_bundle=arm_emulator.ca_bundle,
        max_retries=0,
    )
    try:
        yield d
    finally:
        d.close()


def test_list_all_pages_in_the_official_shape(arm_emulator: Any, make_scale_set: Any, compute_client: Any) -> None:
    schemas = SpecSchemas(SPEC_FILE)
    made = [make_scale_set(1, serve=False, tags={"canary-group": "web", "canary-wave": str(i)}) for i in (1, 2)]
    made.append(make_scale_set(1, serve=False))
    arm_emulator.set_page_size(2)
    pages: list[Any] = []

    def hook(response: Any) -> None:
        pages.append(json.loads(response.http_response.text()))

    listed = list(compute_client.virtual_machine_scale_sets.list_all(raw_response_hook=hook))
    assert {s.name for s in listed} >= {h.name for h in made}
    # VirtualMachineScaleSetListWithLinkResult: value + nextLink while more remain; each item a scale set as
    # VirtualMachineScaleSets_Get returns it (the spec's VirtualMachineScaleSet), tags included.
    assert len(pages) >= 2 and all("nextLink" in p for p in pages[:-1]) and "nextLink" not in pages[-1]
    for page in pages:
        assert set(page) <= {"value", "nextLink"}
        for item in page["value"]:
            schemas.validate("VirtualMachineScaleSets_Get", item)
    by_name = {item["name"]: item for page in pages for item in page["value"]}
    assert by_name[made[0].name]["tags"] == {"canary-group": "web", "canary-wave": "1"}
    assert "tags" not in by_name[made[2].name]


def test_tagged_scale_sets_form_groups(arm_emulator: Any, make_scale_set: Any, discovery: ArmDiscovery) -> None:
    arm_emulator.set_page_size(1)  # every scale set on its own page: discovery follows nextLink
    canary = make_scale_set(1, serve=False, resource_group="rg-a", tags={"canary-group": "web", "canary-wave": "1"})
    rest = make_scale_set(1, serve=False, resource_group="rg-b", tags={"Canary-Group": "web", "canary-wave": "2"})
    api = make_scale_set(1, serve=False, resource_group="rg-c", tags={"canary-group": "api"})
    make_scale_set(1, serve=False, tags={"owner": "someone"})
    found = discovery.tagged_scale_sets([SUBSCRIPTION_ID])
    ours = [f for f in found if f.ref.name in {canary.name, rest.name, api.name}]
    assert len(ours) == 3 and {f.ref.subscription_id for f in ours} == {SUBSCRIPTION_ID}
    groups, problems = groups_from_tags(ours, TargetDefaults(subscription_id=SUBSCRIPTION_ID))
    assert problems == []
    by_name = {g.name: g for g in groups}
    assert [[t.ref for t in w.targets] for w in by_name["web"].waves] == [
        [next(f.ref for f in ours if f.ref.name == canary.name)],
        [next(f.ref for f in ours if f.ref.name == rest.name)],
    ]
    assert by_name["web"].waves[0].targets[0].key == f"rg-a:{canary.name}"
    assert [t.ref.name for t in by_name["api"].targets()] == [api.name]


def test_an_unreadable_or_unknown_subscription_is_a_port_error(
    arm_emulator: Any, make_scale_set: Any, discovery: ArmDiscovery
) -> None:
    make_scale_set(1, serve=False, tags={"canary-group": "web"})
    # Reader on one resource group only: listing the subscription is refused (403 AuthorizationFailed).
    arm_emulator.set_readable_scopes([f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-images"])
    with pytest.raises(AccessDeniedError, match="AuthorizationFailed"):
        discovery.tagged_scale_sets([SUBSCRIPTION_ID])
    arm_emulator.set_readable_scopes([f"/subscriptions/{SUBSCRIPTION_ID}"])
    assert discovery.tagged_scale_sets([SUBSCRIPTION_ID])
    with pytest.raises((NotFoundError, PortError), match="SubscriptionNotFound"):
        discovery.tagged_scale_sets(["22222222-2222-2222-2222-222222222222"])


@pytest.mark.parametrize(
    "item",
    [
        {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/x"},
        {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/x", "tags": {}},
        {"id": "/something/else", "tags": {"canary-group": "web"}},
        {"tags": {"canary-group": "web"}},
        {"id": None, "tags": ["canary-group"]},
    ],
)
def test_items_without_the_tag_or_a_scale_set_id_are_left_out(item: dict[str, Any]) -> None:
    assert tagged_scale_set(item) is None


def test_the_admin_api_creates_a_tagged_scale_set_and_refuses_bad_tags(arm_emulator: Any, compute_client: Any) -> None:
    import requests

    def create(tags: Any) -> Any:
        body = {"resource_group": "rg-admin", "name": "vmss-tagged", "instances": 1, "serve": False, "tags": tags}
        return requests.post(
            f"{arm_emulator.url}/_admin/scalesets",
            json=body,
            headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
            verify=arm_emulator.ca_bundle,
            timeout=10,
        )

    try:
        assert create({"canary-group": "web"}).status_code == 201
        assert compute_client.virtual_machine_scale_sets.get("rg-admin", "vmss-tagged").tags == {"canary-group": "web"}
        refused = create({"canary-wave": 2})
        assert refused.status_code == 400 and "tags must be an object of text values" in refused.text
    finally:
        arm_emulator.delete_scale_set("rg-admin", "vmss-tagged")
