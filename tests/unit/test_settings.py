"""Settings: defaults, identity vs connection strings, and every problem reported at once."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from rollout.knobs import knob_fields
from rollout.policy import RolloutPolicy
from rollout.settings import (
    DEFAULT_TICK_SCHEDULE,
    PLATFORM_SIGNALS_READ,
    SETTINGS_READ,
    ProbeSettings,
    SettingsError,
    http_auth_at_startup,
    load_settings,
    markdown_table,
    platform_auth_enabled,
    readme_with_table,
)

REQUIRED = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "VMSS_RESOURCE_GROUP": "rg",
    "VMSS_NAME": "vmss",
    "StateStorage__tableServiceUri": "https://acct.table.core.windows.net/",
}


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings(REQUIRED)
    assert s.arm_endpoint == "https://management.azure.com"
    assert s.release_container == "init" and s.extension_name == "CustomScript"
    assert s.extension_file_auth == "managedIdentity"
    assert s.state_storage.service_uri == "https://acct.table.core.windows.net"
    assert (s.policy.bake_seconds, s.policy.batch_percent, s.policy.failure_threshold) == (300, 20, 3)
    assert s.policy.rollback_mode == "budgeted"
    assert s.policy.calculate_max_unavailable(10) == 2
    assert (s.probe.path, s.probe.port, s.probe.expect_status) == ("/", 80, 200)
    assert s.target_key == "rg:vmss"


def test_state_storage_falls_back_to_azure_web_jobs_storage() -> None:
    env = {k: v for k, v in REQUIRED.items() if not k.startswith("StateStorage")}
    s = load_settings({**env, "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert s.state_storage.connection_string == "UseDevelopmentStorage=true"


def test_the_identity_form_wins_over_a_connection_string() -> None:
    s = load_settings({**REQUIRED, "StateStorage": "DefaultEndpointsProtocol=https;AccountName=x"})
    assert s.state_storage.service_uri is not None and s.state_storage.connection_string is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_UNAVAILABLE": "25%"}, None),
        ({"MAX_UNAVAILABLE": "3"}, None),
        ({"MAX_UNAVAILABLE": "0"}, "MAX_UNAVAILABLE='0'"),
        ({"MAX_UNAVAILABLE": "lots"}, "MAX_UNAVAILABLE='lots'"),
        ({"BAKE_SECONDS": "five"}, "BAKE_SECONDS='five' is not a number"),
        ({"BAKE_SECONDS": "-1"}, "BAKE_SECONDS='-1' must not be negative"),
        ({"BATCH_PERCENT": "150"}, "BATCH_PERCENT='150' must be between 1 and 100"),
        ({"BATCH_SIZE": "-2"}, "BATCH_SIZE='-2' must not be negative (0 = use batch_percent)"),
        ({"MAX_UNAVAILABLE": "150%"}, "MAX_UNAVAILABLE='150%' must be between 1 and 100"),
        ({"PROBE_TIMEOUT_SECONDS": "0.01"}, "PROBE_TIMEOUT_SECONDS='0.01' must be between 0.1 and 300"),
        ({"PROBE_EXPECT_STATUS": "99"}, "PROBE_EXPECT_STATUS='99' must be between 100 and 599"),
        ({"STATE_TABLE_PREFIX": "1abc"}, "STATE_TABLE_PREFIX='1abc' must be letters and digits"),
        ({"ARM_ENDPOINT": "http://management.azure.com"}, "must be an https:// URL"),
        ({"RELEASE_CONTAINER": "Init_Releases"}, "not a valid blob container name"),
        ({"PROBE_PATH": "health"}, "must start with '/'"),
        ({"PROBE_BODY_PATTERN": "(unclosed"}, "not a valid regular expression"),
        ({"PROBE_PORT": "70000"}, "PROBE_PORT='70000' must be between 1 and 65535"),
        ({"EXTENSION_FILE_AUTH": "sas"}, "must be 'managedIdentity' or 'none'"),
        ({"LATENCY_RATIO": "0.5"}, "LATENCY_RATIO='0.5' must be 0 (off) or at least 1"),
        ({"LATENCY_RATIO": "2.5"}, None),
        ({"ROLLBACK_REIMAGE": "maybe"}, "ROLLBACK_REIMAGE='maybe' must be true or false"),
        ({"ROLLBACK_MODE": "all-at-once"}, None),
        ({"ROLLBACK_MODE": "Budgeted"}, None),
        ({"ROLLBACK_MODE": "fast"}, "ROLLBACK_MODE='fast' must be one of budgeted, all-at-once"),
        # Found by tests/service/test_bad_input_properties.py: NaN and infinity passed every bound (NaN
        # compares false), so LATENCY_RATIO=nan or PROBE_TIMEOUT_SECONDS=nan were accepted; a timeout
        # of 1e300 crashed the probe (the socket's OverflowError); a status of 1000 no instance can answer.
        ({"LATENCY_RATIO": "nan"}, "LATENCY_RATIO='nan' is not a finite number"),
        ({"LATENCY_MIN_DELTA_MS": "NaN"}, "LATENCY_MIN_DELTA_MS='NaN' is not a finite number"),
        ({"PROBE_TIMEOUT_SECONDS": "inf"}, "PROBE_TIMEOUT_SECONDS='inf' is not a finite number"),
        ({"PROBE_TIMEOUT_SECONDS": "1e999"}, "PROBE_TIMEOUT_SECONDS='1e999' is not a finite number"),
        ({"PROBE_TIMEOUT_SECONDS": "1e300"}, "PROBE_TIMEOUT_SECONDS='1e300' must be between 0.1 and 300"),
        ({"PROBE_TIMEOUT_SECONDS": "300"}, None),
        ({"PROBE_EXPECT_STATUS": "1000"}, "PROBE_EXPECT_STATUS='1000' must be between 100 and 599"),
        ({"PROBE_EXPECT_STATUS": "599"}, None),
        ({"BAKE_SECONDS": "9" * 5000}, "BAKE_SECONDS='9999"),
        # Endpoints a client cannot use were accepted, and failed later with a ValueError naming nothing.
        ({"ARM_ENDPOINT": "https://[::1"}, "ARM_ENDPOINT='https://[::1' is not a valid URL"),
        ({"ARM_ENDPOINT": "https://host:99999"}, "ARM_ENDPOINT='https://host:99999' is not a valid URL"),
        ({"ARM_ENDPOINT": "https://127.0.0.1:8443/"}, None),
        ({"StateStorage__tableServiceUri": "garbage"}, "StateStorage__tableServiceUri must be the service's URL"),
        ({"ReleaseStorage__blobServiceUri": "https://a b"}, "ReleaseStorage__blobServiceUri must be the service's URL"),
        (
            {"ReleaseStorage__blobServiceUri": "http://127.0.0.1:10000/devstoreaccount1"},
            None,
        ),  # more digits than int() converts: named, cut short
        ({"VMSS_NAME": "bad/name"}, "not a valid scale set name"),
        ({"HTTP_AUTH": "entra"}, None),
        ({"HTTP_AUTH": "function-key"}, None),
        ({"HTTP_AUTH": "aad"}, "HTTP_AUTH='aad' must be one of 'function-key', 'entra'"),
        ({"HTTP_AUTH": "Entra"}, "HTTP_AUTH='Entra'"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str | None) -> None:
    if message is None:
        load_settings({**REQUIRED, **env})
        return
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings({**REQUIRED, **env})


def test_every_missing_required_setting_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({})
    text = str(info.value)
    for name in ("AZURE_SUBSCRIPTION_ID", "VMSS_RESOURCE_GROUP", "VMSS_NAME", "StateStorage"):
        assert name in text


# Identity-only forms that must stay out of a local settings file (README's configuration table lists them).
# TickQueue__queueServiceUri: the queue trigger binding would also pick an identity-based connection locally.
IDENTITY_ONLY = ("ReleaseStorage__blobServiceUri", "TickQueue__queueServiceUri")


def test_the_sample_settings_file_lists_every_setting_the_code_reads() -> None:
    sample = json.loads((Path(__file__).parents[2] / "local.settings.sample.json").read_text())
    values = sample["Values"]
    missing = [name for name in SETTINGS_READ if name not in values and name not in IDENTITY_ONLY]
    assert missing == []
    # The blob trigger's SDK binding uses a managed identity as soon as one of these EXISTS, even empty
    # (azurefunctions/extensions/bindings/blob/utils.py): locally that would break the trigger.
    assert [name for name in IDENTITY_ONLY if name in values] == []
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_http_auth_defaults_to_function_keys_and_the_route_level_fails_closed() -> None:
    assert load_settings(REQUIRED).http_auth == "function-key"
    assert load_settings({**REQUIRED, "HTTP_AUTH": "entra"}).http_auth == "entra"
    # The import-time choice of auth level: only a valid "entra" drops the function keys.
    assert http_auth_at_startup({"HTTP_AUTH": "entra"}) == "entra"
    for value in (None, "", "function-key", "aad", "ENTRA", "entra "):
        env = {} if value is None else {"HTTP_AUTH": value}
        expected = "entra" if value == "entra " else "function-key"  # surrounding blanks are trimmed, as everywhere
        assert http_auth_at_startup(env) == expected, value


def test_the_platform_auth_signal_is_read_as_app_service_sets_it() -> None:
    assert platform_auth_enabled({"WEBSITE_AUTH_ENABLED": "True"})
    assert platform_auth_enabled({"WEBSITE_AUTH_ENABLED": "true"})
    for value in (None, "", "False", "1", "yes"):
        assert not platform_auth_enabled({} if value is None else {"WEBSITE_AUTH_ENABLED": value}), value
    # A platform variable, not an app setting: infra/ must not set it, so it is not in SETTINGS_READ.
    assert "WEBSITE_AUTH_ENABLED" in PLATFORM_SIGNALS_READ and "WEBSITE_AUTH_ENABLED" not in SETTINGS_READ


def test_readme_configuration_table_is_generated_from_the_settings_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert readme_with_table(readme) == readme, (
        "README.md's configuration table differs from rollout/settings.py: run `python -m rollout.settings "
        "--update-readme`"
    )


def test_every_policy_and_probe_field_is_a_documented_knob() -> None:
    """A field without a knob would have a default no setting can change and no README row."""
    for cls in (RolloutPolicy, ProbeSettings):
        declared = {kf.name for kf in knob_fields(cls)}
        assert declared == {f.name for f in dataclasses.fields(cls)}, cls
    table = markdown_table()
    for kf in (*knob_fields(RolloutPolicy), *knob_fields(ProbeSettings)):
        assert kf.knob.setting in SETTINGS_READ
        assert f"| `{kf.knob.setting}` |" in table


def test_the_table_shows_the_code_defaults() -> None:
    """The README default of a knob is the field's default, not text written a second time."""
    table = {line.split(" | ")[0][3:-1]: line.split(" | ")[-1][:-2] for line in markdown_table().splitlines()[2:]}
    assert table["BAKE_SECONDS"] == f"`{RolloutPolicy().bake_seconds}`"
    assert table["MAX_UNAVAILABLE"] == f"`{RolloutPolicy().max_unavailable_percent}%`"
    assert table["ROLLBACK_REIMAGE"] == "`true`"
    assert table["PROBE_TIMEOUT_SECONDS"] == "`3`"
    assert table["EXTENSION_NAME"] == f"`{load_settings(REQUIRED).extension_name}`"


def test_knob_settings_parse_to_the_fields_they_name() -> None:
    env = {
        **REQUIRED,
        "BAKE_SECONDS": "7",
        "MAX_UNAVAILABLE": "3",
        "ROLLBACK_REIMAGE": "no",
        "LATENCY_RATIO": "2",
        "ROLLBACK_MODE": "ALL-AT-ONCE",
        "PROBE_PORT": "8080",
        "PROBE_BODY_PATTERN": " ok ",
    }
    s = load_settings(env)
    assert (s.policy.bake_seconds, s.policy.max_unavailable, s.policy.max_unavailable_percent) == (7, 3, 20)
    assert (s.policy.rollback_reimage, s.policy.latency_ratio, s.policy.rollback_mode) == (False, 2.0, "all-at-once")
    assert (s.probe.port, s.probe.body_pattern) == (8080, " ok ")
    assert load_settings({**REQUIRED, "MAX_UNAVAILABLE": "25%"}).policy.max_unavailable_percent == 25


def test_the_sample_settings_file_has_the_documented_tick_schedule() -> None:
    sample = json.loads((Path(__file__).parents[2] / "local.settings.sample.json").read_text())
    assert sample["Values"]["ROLLOUT_TICK_SCHEDULE"] == DEFAULT_TICK_SCHEDULE


def test_targets_settings_are_optional_and_checked() -> None:
    s = load_settings(REQUIRED)
    assert s.targets_config is None and s.targets_discovery_subscriptions == ()
    sub = "11111111-1111-1111-1111-111111111111"
    s = load_settings(
        {
            **REQUIRED,
            "ReleaseStorage": "UseDevelopmentStorage=true",
            "TARGETS_CONFIG": "config/targets.yaml",
            "TARGETS_DISCOVERY_SUBSCRIPTIONS": f" {sub} ,{sub},00000000-0000-0000-0000-000000000000",
        }
    )
    assert s.targets_config == "config/targets.yaml"
    assert s.targets_discovery_subscriptions == (sub, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(SettingsError) as info:
        load_settings({**REQUIRED, "TARGETS_CONFIG": "../targets.txt", "TARGETS_DISCOVERY_SUBSCRIPTIONS": "x y"})
    message = str(info.value)
    assert "TARGETS_CONFIG='../targets.txt' must be a blob name in the release container ending in .json" in message
    assert "TARGETS_CONFIG needs ReleaseStorage" in message
    assert "TARGETS_DISCOVERY_SUBSCRIPTIONS: 'x y' is not a subscription id" in message
