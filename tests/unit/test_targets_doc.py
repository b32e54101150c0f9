"""The targets document: a valid one gives the configuration it says; a bad one names every problem
with its path; any input at all gives one or the other, never another exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.policy import RolloutPolicy
from rollout.settings import ProbeSettings
from rollout.targets import OnFailure, TargetRef, TargetsConfig
from rollout.targets_doc import (
    MAX_DOCUMENT_BYTES,
    MAX_TARGETS,
    TaggedScaleSet,
    TargetDefaults,
    TargetsDocumentError,
    config_from_data,
    groups_from_tags,
    load_document,
    merge_groups,
)

SUB = "00000000-0000-0000-0000-000000000000"
OTHER_SUB = "11111111-1111-1111-1111-111111111111"
APP_POLICY = RolloutPolicy(bake_seconds=60, max_unavailable=2)
APP_PROBE = ProbeSettings(path="/app", port=8080)
DEFAULTS = TargetDefaults(subscription_id=SUB, policy=APP_POLICY, probe=APP_PROBE)

EXAMPLE_YAML = b"""
defaultGroup: web
groups:
  - name: web
    waveBakeSeconds: 600
    onFailure: rollback-all
    waves:
      - targets:
          - resourceGroup: rg-web
            name: vmss-canary
            policy: {CANARY_COUNT: 2, MAX_UNAVAILABLE: "25%", ROLLBACK_REIMAGE: false}
            probe: {PROBE_PATH: /healthz, PROBE_BODY_PATTERN: " ok "}
      - targets:
          - {subscription: 11111111-1111-1111-1111-111111111111, resourceGroup: rg-west, name: vmss-west}
          - {resourceGroup: rg-east, name: vmss-east}
  - name: api
    waves:
      - targets: [{resourceGroup: rg-api, name: vmss-api}]
"""


def problems_of(data: Any) -> tuple[str, ...]:
    with pytest.raises(TargetsDocumentError) as info:
        config_from_data(data, DEFAULTS, "test")
    return info.value.problems


def one_group(*targets: dict[str, Any], **group: Any) -> dict[str, Any]:
    return {"groups": [{"name": "web", "waves": [{"targets": list(targets)}], **group}]}


def test_the_example_document_gives_its_groups_waves_and_effective_policies() -> None:
    config = load_document("targets.yaml", EXAMPLE_YAML, DEFAULTS)
    assert config.source == "targets.yaml" and config.default_group == "web"
    web = config.group("web")
    assert web is not None and web.wave_bake_seconds == 600 and web.on_failure is OnFailure.ROLLBACK_ALL
    assert [[t.key for t in w.targets] for w in web.waves] == [
        ["rg-web:vmss-canary"],
        ["rg-west:vmss-west", "rg-east:vmss-east"],
    ]
    canary = web.waves[0].targets[0]
    # Overrides replace only the knobs they name; the rest are the app's settings.
    assert canary.policy.canary_count == 2 and canary.policy.bake_seconds == 60
    # "25%" replaces the app's count of 2 (a count would win over the percent otherwise).
    assert canary.policy.max_unavailable == 0 and canary.policy.max_unavailable_percent == 25
    assert canary.policy.rollback_reimage is False
    assert canary.probe.path == "/healthz" and canary.probe.port == 8080 and canary.probe.body_pattern == " ok "
    west, east = web.waves[1].targets
    assert west.ref == TargetRef(OTHER_SUB, "rg-west", "vmss-west") and east.ref.subscription_id == SUB
    assert west.policy == APP_POLICY and west.probe == APP_PROBE
    api = config.group("api")
    assert api is not None and api.wave_bake_seconds == 0 and api.on_failure is OnFailure.HALT


def test_json_gives_the_same_configuration_as_yaml() -> None:
    data = yaml.safe_load(EXAMPLE_YAML)
    as_json = json.dumps(data).encode()
    assert load_document("t.json", as_json, DEFAULTS, "t") == load_document("t.yaml", EXAMPLE_YAML, DEFAULTS, "t")


def test_the_default_group_is_default_unless_named() -> None:
    config = config_from_data(one_group({"resourceGroup": "rg", "name": "a"}), DEFAULTS, "t")
    assert config.default_group == "default"


def test_every_problem_is_named_at_once_with_its_path() -> None:
    data = {
        "groups": [
            {
                "name": "Web",
                "wavebakeSeconds": 5,
                "onFailure": "ignore",
                "waves": [
                    {"targets": []},
                    {
                        "targets": [
                            {"resourceGroup": "rg", "name": "a b", "policy": {"CANARY_COUNT": 0, "PROBE_PATH": "/"}},
                            {"name": "x", "probe": {"PROBE_PATH": "health", "PROBE_PORT": "http"}},
                        ]
                    },
                ],
            },
            {"name": "api", "waves": []},
        ],
        "defaultgroup": "web",
    }
    problems = problems_of(data)
    expected = [
        "defaultgroup: unknown field (did you mean defaultGroup?)",
        "groups[0].wavebakeSeconds: unknown field (did you mean waveBakeSeconds?)",
        "groups[0].name: 'Web' is not a group name",
        "groups[0].onFailure: must be one of halt, rollback-all",
        "groups[0].waves[0].targets: must list at least one target (an empty wave)",
        "groups[0].waves[1].targets[0].name: 'a b' is not a valid scale set name",
        "groups[0].waves[1].targets[0].policy.PROBE_PATH: unknown setting here (PROBE_PATH is a probe setting)",
        "groups[0].waves[1].targets[0].policy: CANARY_COUNT='0' must be at least 1",
        "groups[0].waves[1].targets[1].resourceGroup: required",
        "groups[0].waves[1].targets[1].probe: PROBE_PORT='http' is not a number",
        "groups[0].waves[1].targets[1].probe: PROBE_PATH='health' must start with '/'",
        "groups[1].waves: must list at least one wave",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "the document must be an object (got a list)"),
        ({}, "groups: required: a list of groups"),
        ({"groups": {}}, "groups: must be a list of groups"),
        ({"groups": []}, "groups: must list at least one group"),
        ({"groups": [{"name": "web", "waves": [{}]}]}, "groups[0].waves[0].targets: required"),
        ({"groups": [{"name": "web", "waves": [[]]}]}, "groups[0].waves[0]: a wave must be an object (got a list)"),
        ({"groups": [{"waves": [{"targets": [{"resourceGroup": "r", "name": "n"}]}]}]}, "groups[0].name: required"),
        (one_group({"resourceGroup": "r", "name": "n"}, waveBakeSeconds=-1), "groups[0].waveBakeSeconds: must be"),
        (one_group({"resourceGroup": "r", "name": "n"}, waveBakeSeconds=True), "groups[0].waveBakeSeconds: must be"),
        (one_group({"resourceGroup": "r", "name": "n"}, waveBakeSeconds=1.5), "groups[0].waveBakeSeconds: must be"),
        (one_group({"resourceGroup": "r", "name": "n", "subscription": "nope!"}), "'nope!' is not a subscription id"),
        (one_group({"resourceGroup": "r", "name": "n", "policy": []}), "policy: must be an object of app settings"),
        (one_group({"resourceGroup": "r", "name": "n", "policy": {"BAKE_SECONDS": None}}), "must be a number"),
        (one_group({"resourceGroup": "r", "name": "n", "policy": {"ROLLBACK_MODE": "fast"}}), "ROLLBACK_MODE="),
        (one_group({"resourceGroup": "r", "name": "n", "policy": {"MAX_UNAVAILABLE": "0%"}}), "MAX_UNAVAILABLE="),
        (one_group({"resourceGroup": "r", "name": "n", "probe": {"PROBE_BODY_PATTERN": "("}}), "PROBE_BODY_PATTERN"),
        (
            {**one_group({"resourceGroup": "r", "name": "n"}), "defaultGroup": "api"},
            "defaultGroup: 'api' is not one of the groups (web)",
        ),
    ],
)
def test_a_bad_document_is_refused_saying_why(data: Any, expected: str) -> None:
    problems = problems_of(data)
    assert any(expected in p for p in problems), problems


def test_a_scale_set_is_a_target_once_in_the_whole_configuration() -> None:
    # Same key (resource group and name, without case), even in another subscription or group.
    data = {
        "groups": [
            {"name": "web", "waves": [{"targets": [{"resourceGroup": "rg", "name": "a"}]}]},
            {
                "name": "web",
                "waves": [{"targets": [{"subscription": OTHER_SUB, "resourceGroup": "RG", "name": "A"}]}],
            },
        ]
    }
    problems = problems_of(data)
    assert any(p.startswith("groups[1].name: group 'web' is declared twice") for p in problems), problems
    twice = "groups[1].waves[0].targets[0]: scale set 'rg:a' is already a target at groups[0]"
    assert any(p.startswith(twice) for p in problems), problems


def test_bounds_on_size_and_counts() -> None:
    with pytest.raises(TargetsDocumentError, match="at most"):
        load_document("t.json", b" " * (MAX_DOCUMENT_BYTES + 1), DEFAULTS)
    many = [{"resourceGroup": "rg", "name": f"s{i}"} for i in range(MAX_TARGETS + 1)]
    assert any(f"more than {MAX_TARGETS} targets" in p for p in problems_of(one_group(*many)))
    waves = {"groups": [{"name": "web", "waves": [{"targets": [{"resourceGroup": "r", "name": "n"}]}] * 21}]}
    assert any("21 waves; at most 20" in p for p in problems_of(waves))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("t.txt", b"{}", "must end in .json, .yaml, .yml"),
        ("t.json", b"\xff\xfe", "not UTF-8"),
        ("t.json", b"{", "not valid JSON"),
        ("t.json", b'{"groups": [], "groups": []}', "the field 'groups' appears twice"),
        ("t.yaml", b"groups: []\ngroups: []\n", "the field 'groups' appears twice"),
        ("t.yaml", b"a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
        ("t.yaml", b"groups: !!python/object/apply:os.system [echo]\n", "not valid YAML"),
        ("t.yaml", b"? [a, b]\n: 1\n", "not valid YAML"),
        ("t.json", b"[" * 100_000, "nested too deeply"),
        ("t.yaml", b"[" * 100_000, "nested too deeply"),
        ("t.yaml", b"", "the document must be an object (got null)"),
    ],
)
def test_unreadable_documents_are_refused_saying_why(name: str, content: bytes, expected: str) -> None:
    with pytest.raises(TargetsDocumentError) as info:
        load_document(name, content, DEFAULTS)
    assert expected in str(info.value), info.value


def test_too_many_problems_are_summarised() -> None:
    many = [{"resourceGroup": "rg", "name": f"bad name {i}"} for i in range(80)]
    problems = problems_of(one_group(*many))
    assert len(problems) == 51 and problems[-1] == "... and 30 more"


# --- tag discovery ---------------------------------------------------------------------------------


def tagged(rg: str, name: str, **tags: str) -> TaggedScaleSet:
    return TaggedScaleSet(ref=TargetRef(SUB, rg, name), tags={k.replace("_", "-"): v for k, v in tags.items()})


def test_tags_form_groups_with_waves_ordered_by_number() -> None:
    groups, problems = groups_from_tags(
        [
            tagged("rg", "east", canary_group="web", canary_wave="3"),
            tagged("rg", "canary", canary_group="web", canary_wave="1"),
            tagged("rg", "west", **{"Canary-Group": "web", "CANARY-WAVE": "3"}),
            tagged("rg", "api", canary_group="api"),  # no wave tag: wave 1
            tagged("rg", "untagged", owner="me"),
            tagged("rg", "bad", canary_group="Web!"),
            tagged("rg", "bad-wave", canary_group="web", canary_wave="zero"),
        ],
        DEFAULTS,
    )
    assert [g.name for g in groups] == ["api", "web"]
    web = groups[1]
    assert [[t.ref.name for t in w.targets] for w in web.waves] == [["canary"], ["east", "west"]]
    assert web.targets()[0].policy == APP_POLICY
    assert len(problems) == 2
    assert "rg/bad: tag canary-group: 'Web!' is not a group name" in problems[0]
    assert "tag canary-wave='zero' must be a whole number from 1 to 20" in problems[1]


def test_discovered_groups_merge_with_the_document_under_the_same_rules() -> None:
    declared = config_from_data(one_group({"resourceGroup": "rg", "name": "a"}), DEFAULTS, "doc")
    found, _ = groups_from_tags([tagged("rg", "b", canary_group="api")], DEFAULTS)
    merged = merge_groups(declared, found, "doc + tags")
    assert [g.name for g in merged.groups] == ["web", "api"] and merged.source == "doc + tags"
    clash, _ = groups_from_tags([tagged("rg", "c", canary_group="web")], DEFAULTS)
    with pytest.raises(TargetsDocumentError, match="group 'web' is both declared in the document and discovered"):
        merge_groups(declared, clash, "x")
    twice, _ = groups_from_tags([tagged("RG", "A", canary_group="api")], DEFAULTS)
    with pytest.raises(TargetsDocumentError, match="scale set 'rg:a' is already a target"):
        merge_groups(declared, twice, "x")
    with pytest.raises(TargetsDocumentError, match="no scale set is tagged"):
        merge_groups(None, [], "tags")


# --- any input: a configuration or a clear error -------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
KEYS = st.sampled_from(
    [
        "groups",
        "defaultGroup",
        "name",
        "waves",
        "targets",
        "waveBakeSeconds",
        "onFailure",
        "subscription",
        "resourceGroup",
        "policy",
        "probe",
        "CANARY_COUNT",
        "MAX_UNAVAILABLE",
        "PROBE_PATH",
        "PROBE_BODY_PATTERN",
        "ROLLBACK_MODE",
    ]
) | st.text(max_size=8)
DATA = st.recursive(
    SCALARS | st.sampled_from(["web", "rg", "halt", "rollback-all", "25%", "/h", "("]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)


def check_result(run: Any) -> None:
    try:
        config = run()
    except TargetsDocumentError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert len(str(exc)) < 100_000
        return
    assert isinstance(config, TargetsConfig) and config.groups
    assert len({t.key for t in config.targets()}) == sum(len(g.targets()) for g in config.groups)


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(data=DATA)
def test_any_data_gives_a_configuration_or_named_problems(data: Any) -> None:
    check_result(lambda: config_from_data(data, DEFAULTS, "test"))


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(data=DATA, as_yaml=st.booleans())
def test_any_document_text_gives_a_configuration_or_named_problems(data: Any, as_yaml: bool) -> None:
    try:
        text = yaml.safe_dump(data) if as_yaml else json.dumps(data, allow_nan=True)
    except (ValueError, yaml.YAMLError):
        return
    check_result(lambda: load_document("t.yaml" if as_yaml else "t.json", text.encode(), DEFAULTS))


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(content=st.binary(max_size=300), name=st.sampled_from(["t.json", "t.yaml", "t.yml", "t"]))
def test_any_bytes_give_a_configuration_or_named_problems(content: bytes, name: str) -> None:
    check_result(lambda: load_document(name, content, DEFAULTS))


# --- routing a release to its group ----------------------------------------------------------------


def test_a_release_goes_to_its_folders_group_or_the_default_group() -> None:
    from rollout.targets_doc import route

    config = load_document("targets.yaml", EXAMPLE_YAML, DEFAULTS)
    web, api = config.group("web"), config.group("api")
    assert route(config, None) is web  # defaultGroup: web
    assert route(config, "api") is api
    assert route(config, "payments") == "no group 'payments' is configured (groups: web, api)"
    bad = route(config, "Payments")
    assert isinstance(bad, str) and "'Payments' is not a group name" in bad
    without_default = config_from_data(one_group({"resourceGroup": "r", "name": "n"}), DEFAULTS, "t")
    missing = route(without_default, None)
    assert isinstance(missing, str) and "default group 'default', which is not configured (groups: web)" in missing


GROUP_NAMES = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
ARM_NAMES = st.from_regex(r"[A-Za-z0-9._()-]{1,12}", fullmatch=True)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(GROUP_NAMES, min_size=1, max_size=4, unique=True))
    keys: set[str] = set()
    groups = []
    for name in names:
        waves = []
        for _ in range(draw(st.integers(1, 3))):
            targets = []
            for _ in range(draw(st.integers(1, 3))):
                rg, vmss = draw(ARM_NAMES), draw(ARM_NAMES)
                if f"{rg}:{vmss}".lower() in keys:
                    continue
                keys.add(f"{rg}:{vmss}".lower())
                target: dict[str, Any] = {"resourceGroup": rg, "name": vmss}
                if draw(st.booleans()):
                    target["policy"] = {"CANARY_COUNT": draw(st.integers(1, 5)), "MAX_UNAVAILABLE": "30%"}
                targets.append(target)
            if targets:
                waves.append({"targets": targets})
        if waves:
            groups.append({"name": name, "waves": waves, "waveBakeSeconds": draw(st.integers(0, 3600))})
    return {"groups": groups}


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(data=valid_documents(), as_yaml=st.booleans())
def test_a_valid_document_gives_exactly_what_it_declares(data: dict[str, Any], as_yaml: bool) -> None:
    if not data["groups"]:
        return
    text = yaml.safe_dump(data) if as_yaml else json.dumps(data)
    config = load_document("t.yaml" if as_yaml else "t.json", text.encode(), DEFAULTS)
    assert [g.name for g in config.groups] == [g["name"] for g in data["groups"]]
    for group, declared in zip(config.groups, data["groups"], strict=True):
        assert group.wave_bake_seconds == declared["waveBakeSeconds"]
        got = [[(t.ref.resource_group, t.ref.name) for t in w.targets] for w in group.waves]
        assert got == [[(t["resourceGroup"], t["name"]) for t in w["targets"]] for w in declared["waves"]]
        for wave, declared_wave in zip(group.waves, declared["waves"], strict=True):
            for target, declared_target in zip(wave.targets, declared_wave["targets"], strict=True):
                expected = declared_target.get("policy", {}).get("CANARY_COUNT", APP_POLICY.canary_count)
                assert target.policy.canary_count == expected and target.ref.subscription_id == SUB


def test_the_readme_example_is_a_valid_document() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Targets, groups and waves") :]
    example = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]
    config = load_document("targets.yaml", example.encode(), DEFAULTS)
    assert [g.name for g in config.groups] == ["web", "api"] and config.default_group == "web"
    web = config.group("web")
    assert web is not None and len(web.waves) == 3 and web.wave_bake_seconds == 900
    assert web.waves[0].targets[0].policy.max_unavailable_percent == 50
    assert web.waves[1].targets[0].ref.subscription_id == OTHER_SUB
