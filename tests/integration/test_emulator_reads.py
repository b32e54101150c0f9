"""The ARM emulator's subscription read bucket (emulator/arm/budgets.py, ``ReadBuckets``) over HTTPS:
``x-ms-ratelimit-remaining-subscription-reads`` on every read, 429 ``SubscriptionRequestsThrottled``
with ``Retry-After`` when the bucket is empty, refill per second, one bucket per subscription, writes
not counted, and the settings through the admin API."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from emulator.arm.budgets import ARM_SUBSCRIPTION_READS_BUCKET, ARM_SUBSCRIPTION_READS_PER_SECOND
from tests.fixtures.emulator import EMULATOR_TOKEN

pytestmark = pytest.mark.integration
HEADER = "x-ms-ratelimit-remaining-subscription-reads"


class _Session(requests.Session):
    """The emulator's token and CA on every call (a per-call ``verify``: a session's would yield to
    REQUESTS_CA_BUNDLE from the environment)."""

    def __init__(self, arm_emulator: Any) -> None:
        super().__init__()
        self.headers["Authorization"] = f"Bearer {EMULATOR_TOKEN}"
        self._ca = arm_emulator.ca_bundle

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._ca
        return super().request(method, url, *args, **kwargs)


def _session(arm_emulator: Any) -> _Session:
    return _Session(arm_emulator)


def test_reads_count_down_then_429_with_retry_after_and_refill(arm_emulator: Any, make_scale_set: Any) -> None:
    ss = make_scale_set(1)
    url = f"{arm_emulator.url}{ss.id}?api-version=2024-07-01"
    arm_emulator.set_read_limit(3, 2)
    with _session(arm_emulator) as session:
        remaining = [session.get(url, timeout=5).headers[HEADER] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        throttled = session.get(url, timeout=5)
        assert throttled.status_code == 429
        assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
        assert throttled.headers["Retry-After"] == "1" and throttled.headers[HEADER] == "0"
        assert arm_emulator.reads_throttled == 1
        # A write is not a read: it takes no read token (and gets no read header).
        body = {"instanceIds": ["0"]}
        write = session.post(url.replace("?", "/manualupgrade?"), json=body, timeout=5)
        assert write.status_code in (200, 202) and HEADER not in write.headers
        # Another subscription has its own bucket.
        other = arm_emulator.url + ss.id.replace(ss.id.split("/")[2], "99999999-0000-0000-0000-000000000000")
        assert session.get(f"{other}?api-version=2024-07-01", timeout=5).headers[HEADER] == "2"
        time.sleep(0.6)  # two tokens a second
        assert session.get(url, timeout=5).status_code == 200


def test_unlimited_by_default_and_set_through_the_admin_api(arm_emulator: Any, make_scale_set: Any) -> None:
    ss = make_scale_set(1)
    url = f"{arm_emulator.url}{ss.id}?api-version=2024-07-01"
    admin = f"{arm_emulator.url}/_admin/settings"
    with _session(arm_emulator) as session:
        assert HEADER not in session.get(url, timeout=5).headers
        assert session.get(admin, timeout=5).json()["read_limit"] is None
        changed = session.post(admin, json={"read_limit": {}}, timeout=5).json()
        assert (
            changed["read_limit"]
            == {
                "capacity": ARM_SUBSCRIPTION_READS_BUCKET,
                "per_second": ARM_SUBSCRIPTION_READS_PER_SECOND,
            }
            == {"capacity": 250, "per_second": 25}
        )
        assert session.get(url, timeout=5).headers[HEADER] == "249"
        assert session.post(admin, json={"read_limit": None}, timeout=5).json()["read_limit"] is None
    with pytest.raises(ValueError):
        arm_emulator.set_read_limit(0)


def test_the_compute_adapter_waits_out_a_short_retry_after_and_surfaces_a_long_one(
    arm_emulator: Any, make_scale_set: Any
) -> None:
    """rollout/adapters/compute.py: a 429 from the read bucket with a Retry-After within
    ``max_retry_after_s`` is slept through and retried; a longer one is a TransientError carrying it
    (the next tick retries) instead of holding the tick."""
    from rollout.adapters.compute import AzureCompute, credential_for
    from rollout.ports import TransientError
    from tests.fixtures.emulator import SUBSCRIPTION_ID

    ss = make_scale_set(2)

    def compute(**overrides: Any) -> AzureCompute:
        return AzureCompute(
            subscription_id=SUBSCRIPTION_ID,
            resource_group=ss.resource_group,
            vmss_name=ss.name,
            extension_name="CustomScript",
            arm_endpoint=arm_emulator.url,
            credential=credential_for(EMULATOR_TOKEN),
            ca_bundle=arm_emulator.ca_bundle,
            **overrides,
        )

    arm_emulator.set_read_limit(3, 2)  # one observation (3 reads) empties it; a token every 0.5 s
    with compute() as adapter:
        adapter.observe()
        began = time.monotonic()
        fleet = adapter.observe()  # 429 Retry-After 1 on its first read: waited out
        assert len(fleet.instances) == 2 and time.monotonic() - began >= 0.9
    assert arm_emulator.reads_throttled >= 1
    arm_emulator.set_read_limit(1, 0.1)  # a token every 10 s: Retry-After 10 > max_retry_after_s 5
    with compute() as adapter:
        adapter.read_model()
        with pytest.raises(TransientError) as caught:
            adapter.read_model()
        assert caught.value.retry_after == 10
