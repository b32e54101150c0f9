"""The targets document -> ``TargetsConfig``, validated, with every problem named at once. Pure.

The document (JSON, or YAML read with PyYAML's safe loader) declares the groups the app steers
(README.md, "Targets, groups and waves")::

    defaultGroup: web                  # optional; the group of releases at the container's top level
    groups:
      - name: web                      # lower case letters, digits, '-' (a blob folder name)
        waveBakeSeconds: 600           # optional, 0 to 7 days
        onFailure: halt                # optional: halt | rollback-all
        waves:
          - targets:
              - subscription: 00000000-0000-0000-0000-000000000000   # optional: AZURE_SUBSCRIPTION_ID
                resourceGroup: rg-web-canary
                name: vmss-web-canary
                policy: {CANARY_COUNT: 1, BAKE_SECONDS: 120}          # optional, app setting names
                probe: {PROBE_PATH: /healthz}                         # optional, app setting names

A target's ``policy`` and ``probe`` override the app's settings (``Settings.policy`` / ``.probe``) knob
by knob, with the same names, values and bounds as the app settings (``rollout.knobs``).

Rules, each reported with its path (``groups[0].waves[1].targets[2].name``):

* unknown fields are errors (a misspelt ``wavebakeSeconds`` would silently mean 0 otherwise);
* a group has at least one wave, a wave at least one target;
* group names are unique; ``defaultGroup``, when given, names a group;
* a scale set appears once in the whole configuration: its key (``<resource group>:<name>``, lower case;
  ``TargetRef.key``) is its partition in the state tables, so two entries with one key would share one
  rollout history, and a scale set in two groups would get two version lines fighting over one model.
  A target is therefore in exactly one group;
* bounds: ``MAX_DOCUMENT_BYTES``, ``MAX_GROUPS``, ``MAX_WAVES`` per group, ``MAX_TARGETS`` in all.

Tag discovery (``canary-group=<name>``, ``canary-wave=<n>`` on a scale set) forms groups from the
tagged scale sets (``groups_from_tags``); ``merge_groups`` joins them to the document's under the
same rules.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from rollout.knobs import knob_fields
from rollout.policy import RolloutPolicy
from rollout.settings import ProbeSettings, _knob_values
from rollout.targets import DEFAULT_GROUP, Group, OnFailure, Target, TargetRef, TargetsConfig, Wave

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_GROUPS = 50
MAX_WAVES = 20
MAX_TARGETS = 500
MAX_WAVE_BAKE_SECONDS = 7 * 24 * 3600
MAX_PROBLEMS = 50  # more are summarised: a broken document must not produce a broken answer
DOCUMENT_SUFFIXES = (".json", ".yaml", ".yml")

# A group name is a blob folder name (``<container>/<group>/<release>``): lower case so "Web" and "web"
# cannot be two groups, and short and plain so it is safe in messages, URLs and keys.
GROUP_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ARM_NAME_RE = re.compile(r"[A-Za-z0-9._()-]{1,90}")  # as rollout.settings checks VMSS_RESOURCE_GROUP/VMSS_NAME
_SUBSCRIPTION_RE = re.compile(r"[0-9a-fA-F-]{1,64}")  # as rollout.settings checks AZURE_SUBSCRIPTION_ID

# The tags of discovery (Azure compares tag names without case; values as written).
GROUP_TAG = "canary-group"
WAVE_TAG = "canary-wave"

_TOP_FIELDS = ("groups", "defaultGroup")
_GROUP_FIELDS = ("name", "waves", "waveBakeSeconds", "onFailure")
_WAVE_FIELDS = ("targets",)
_TARGET_FIELDS = ("subscription", "resourceGroup", "name", "policy", "probe")
_POLICY_SETTINGS = tuple(dict.fromkeys(kf.knob.setting for kf in knob_fields(RolloutPolicy)))
_PROBE_SETTINGS = tuple(dict.fromkeys(kf.knob.setting for kf in knob_fields(ProbeSettings)))


class TargetsDocumentError(ValueError):
    """The document cannot be used; ``problems`` names every problem with its path."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
        self.source = source
        self.problems: tuple[str, ...] = tuple(shown)
        super().__init__(f"invalid targets configuration {source}: " + "; ".join(shown))


@dataclass(frozen=True)
class TargetDefaults:
    """What a target does not say: the app's subscription, policy and probe (from ``Settings``)."""

    subscription_id: str
    policy: RolloutPolicy = dataclasses.field(default_factory=RolloutPolicy)
    probe: ProbeSettings = dataclasses.field(default_factory=ProbeSettings)


@dataclass(frozen=True)
class TaggedScaleSet:
    """A scale set as tag discovery lists it: where it is and its tags."""

    ref: TargetRef
    tags: Mapping[str, str]


def document_format_problem(name: str) -> str | None:
    """Why a blob called ``name`` cannot hold a targets document (its suffix says JSON or YAML), or None."""
    if name.lower().endswith(DOCUMENT_SUFFIXES):
        return None
    return f"{name!r} must end in {', '.join(DOCUMENT_SUFFIXES)} (the suffix says how it is read)"


def load_document(name: str, content: bytes, defaults: TargetDefaults, source: str | None = None) -> TargetsConfig:
    """Decode and validate the document in blob ``name``; raise ``TargetsDocumentError`` naming every problem."""
    source = source or name
    data = decode_document(name, content, source)
    return config_from_data(data, defaults, source)


def decode_document(name: str, content: bytes, source: str) -> Any:
    """The document's data (JSON or YAML by ``name``'s suffix), or ``TargetsDocumentError`` saying why not."""
    problem = document_format_problem(name)
    if problem is not None:
        raise TargetsDocumentError(source, [problem])
    if len(content) > MAX_DOCUMENT_BYTES:
        raise TargetsDocumentError(source, [f"the document is {len(content)} bytes; at most {MAX_DOCUMENT_BYTES}"])
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TargetsDocumentError(
            source, [f"the document is not UTF-8 text ({exc.reason} at byte {exc.start})"]
        ) from None
    try:
        if name.lower().endswith(".json"):
            return json.loads(text, object_pairs_hook=_unique_keys)
        return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass (no object tags)
    except _DuplicateKeyError as exc:
        raise TargetsDocumentError(source, [str(exc)]) from None
    except json.JSONDecodeError as exc:
        raise TargetsDocumentError(source, [f"not valid JSON: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise TargetsDocumentError(source, [f"not valid YAML: {_one_line(str(exc))}"]) from None
    except RecursionError:
        raise TargetsDocumentError(source, ["the document is nested too deeply"]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. YAML dates out of range, unhashable keys
        raise TargetsDocumentError(source, [f"cannot be read: {_one_line(str(exc))}"]) from None


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"the field {_shown(key)} appears twice in one object")
        out[key] = value
    return out


class _StrictSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no arbitrary objects), refusing a key written twice in one mapping (the safe
    loader keeps the last silently) and aliases (a few bytes of anchors can name a huge tree)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in keys
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be text", key_node.start_mark
                ) from None
            if seen:
                raise _DuplicateKeyError(
                    f"the field {_shown(str(key))} appears twice in one mapping (line {key_node.start_mark.line + 1})"
                )
            keys.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def config_from_data(data: Any, defaults: TargetDefaults, source: str) -> TargetsConfig:
    """Validate decoded document data; raise ``TargetsDocumentError`` naming every problem."""
    problems: list[str] = []
    config = _Reader(defaults, problems).document(data, source)
    if problems or config is None:
        raise TargetsDocumentError(source, problems or ["the document declares nothing"])
    return config


class _Reader:
    def __init__(self, defaults: TargetDefaults, problems: list[str]) -> None:
        self.defaults = defaults
        self.problems = problems
        self.count = 0  # targets read so far (the walk stops at MAX_TARGETS)

    def problem(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}" if path else text)

    def fields(self, data: Any, path: str, allowed: tuple[str, ...], what: str) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.problem(path, f"{what} must be an object (got {_type_name(data)})")
            return None
        unknown = [k for k in data if k not in allowed]
        for key in unknown[:10]:
            hint = _close_match(str(key), allowed)
            self.problem(_join(path, _key(key)), f"unknown field{hint}; {what} takes {', '.join(allowed)}")
        if len(unknown) > 10:
            self.problem(path, f"{len(unknown) - 10} more unknown fields")
        return {k: v for k, v in data.items() if k in allowed}

    def document(self, data: Any, source: str) -> TargetsConfig | None:
        top = self.fields(data, "", _TOP_FIELDS, "the document")
        if top is None:
            return None
        groups_data = top.get("groups")
        groups: list[Group] = []
        if not isinstance(groups_data, list):
            self.problem("groups", "required: a list of groups" if groups_data is None else "must be a list of groups")
        elif not groups_data:
            self.problem("groups", "must list at least one group")
        elif len(groups_data) > MAX_GROUPS:
            self.problem("groups", f"{len(groups_data)} groups; at most {MAX_GROUPS}")
        else:
            for i, group_data in enumerate(groups_data):
                group = self.group(group_data, f"groups[{i}]")
                if group is not None:
                    groups.append(group)
        default = top.get("defaultGroup", DEFAULT_GROUP)
        names = [g.name for g in groups]
        if "defaultGroup" in top:
            problem = group_name_problem(default)
            if problem is not None:
                self.problem("defaultGroup", problem)
            elif isinstance(groups_data, list) and len(names) == len(groups_data) and default not in names:
                self.problem("defaultGroup", f"{default!r} is not one of the groups ({', '.join(names)})")
        self.problems.extend(duplicate_problems(groups, paths=[f"groups[{i}]" for i in range(len(groups))]))
        if self.problems:
            return None
        return TargetsConfig(groups=tuple(groups), source=source, default_group=str(default))

    def group(self, data: Any, path: str) -> Group | None:
        fields = self.fields(data, path, _GROUP_FIELDS, "a group")
        if fields is None:
            return None
        before = len(self.problems)
        name = fields.get("name")
        problem = "required" if name is None else group_name_problem(name)
        if problem is not None:
            self.problem(_join(path, "name"), problem)
        bake = fields.get("waveBakeSeconds", 0)
        if not _is_int(bake) or not 0 <= bake <= MAX_WAVE_BAKE_SECONDS:
            self.problem(
                _join(path, "waveBakeSeconds"), f"must be a whole number of seconds from 0 to {MAX_WAVE_BAKE_SECONDS}"
            )
        on_failure_raw = fields.get("onFailure", OnFailure.HALT.value)
        on_failure = next((m for m in OnFailure if m.value == on_failure_raw), None)
        if on_failure is None:
            self.problem(_join(path, "onFailure"), f"must be one of {', '.join(m.value for m in OnFailure)}")
        waves_data = fields.get("waves")
        waves: list[Wave] = []
        if not isinstance(waves_data, list):
            self.problem(
                _join(path, "waves"), "required: a list of waves" if waves_data is None else "must be a list of waves"
            )
        elif not waves_data:
            self.problem(_join(path, "waves"), "must list at least one wave")
        elif len(waves_data) > MAX_WAVES:
            self.problem(_join(path, "waves"), f"{len(waves_data)} waves; at most {MAX_WAVES}")
        else:
            for i, wave_data in enumerate(waves_data):
                wave = self.wave(wave_data, f"{path}.waves[{i}]")
                if wave is not None:
                    waves.append(wave)
        if len(self.problems) > before or on_failure is None:
            return None
        return Group(name=str(name), waves=tuple(waves), wave_bake_seconds=int(bake), on_failure=on_failure)

    def wave(self, data: Any, path: str) -> Wave | None:
        fields = self.fields(data, path, _WAVE_FIELDS, "a wave")
        if fields is None:
            return None
        targets_data = fields.get("targets")
        if not isinstance(targets_data, list):
            what = "required: a list of targets" if targets_data is None else "must be a list of targets"
            self.problem(_join(path, "targets"), what)
            return None
        if not targets_data:
            self.problem(_join(path, "targets"), "must list at least one target (an empty wave)")
            return None
        if self.count + len(targets_data) > MAX_TARGETS:
            self.problem(_join(path, "targets"), f"more than {MAX_TARGETS} targets in the document")
            self.count = MAX_TARGETS + 1
            return None
        self.count += len(targets_data)
        before = len(self.problems)
        targets = [self.target(t, f"{path}.targets[{i}]") for i, t in enumerate(targets_data)]
        if len(self.problems) > before:
            return None
        return Wave(targets=tuple(t for t in targets if t is not None))

    def target(self, data: Any, path: str) -> Target | None:
        fields = self.fields(data, path, _TARGET_FIELDS, "a target")
        if fields is None:
            return None
        before = len(self.problems)
        subscription = fields.get("subscription", self.defaults.subscription_id)
        if not isinstance(subscription, str) or not _SUBSCRIPTION_RE.fullmatch(subscription):
            self.problem(_join(path, "subscription"), f"{_shown(subscription)} is not a subscription id")
        names: dict[str, str] = {}
        for key, what in (("resourceGroup", "resource group name"), ("name", "scale set name")):
            value = fields.get(key)
            if value is None:
                self.problem(_join(path, key), "required")
            elif not isinstance(value, str) or not _ARM_NAME_RE.fullmatch(value):
                self.problem(_join(path, key), f"{_shown(value)} is not a valid {what}")
            names[key] = str(value)
        policy = self.overrides(
            fields.get("policy"), _join(path, "policy"), RolloutPolicy, _POLICY_SETTINGS, self.defaults.policy
        )
        probe = self.overrides(
            fields.get("probe"), _join(path, "probe"), ProbeSettings, _PROBE_SETTINGS, self.defaults.probe
        )
        if len(self.problems) > before:
            return None
        assert isinstance(policy, RolloutPolicy) and isinstance(probe, ProbeSettings)
        ref = TargetRef(subscription_id=str(subscription), resource_group=names["resourceGroup"], name=names["name"])
        return Target(ref=ref, policy=policy, probe=probe)

    def overrides(self, data: Any, path: str, cls: type[Any], settings: tuple[str, ...], base: Any) -> Any:
        """``base`` with the knobs ``data`` names set (app setting names and values), or None with problems."""
        if data is None:
            return base
        if not isinstance(data, dict):
            self.problem(path, f"must be an object of app settings (got {_type_name(data)})")
            return None
        raw: dict[str, str] = {}
        before = len(self.problems)
        for key, value in data.items():
            if key not in settings:
                hint = _close_match(str(key), settings)
                if key in _POLICY_SETTINGS or key in _PROBE_SETTINGS:
                    hint = f" here ({key} is a {'policy' if key in _POLICY_SETTINGS else 'probe'} setting)"
                self.problem(_join(path, _key(key)), f"unknown setting{hint}; this takes {', '.join(settings)}")
            elif isinstance(value, bool):
                raw[key] = "true" if value else "false"
            elif isinstance(value, int | float) and not isinstance(value, bool):
                raw[key] = str(value)
            elif isinstance(value, str):
                raw[key] = value
            else:
                self.problem(_join(path, key), f"must be a number, true/false or text (got {_type_name(value)})")
        found: list[str] = []
        values = _knob_values(
            cls,
            lambda name: (raw.get(name) or "").strip() or None,
            found,
            verbatim=raw,
            verbatim_names=("PROBE_BODY_PATTERN",),
        )
        for problem in found:
            self.problem(path, problem)
        # A setting shared by a count and a percent field ("2" or "25%"): the override replaces both.
        for kf in knob_fields(cls):
            if kf.knob.setting in raw and not kf.knob.percent and kf.name not in values:
                shared = [o for o in knob_fields(cls) if o.knob.setting == kf.knob.setting and o.knob.percent]
                if shared:
                    values[kf.name] = 0
        try:
            value = dataclasses.replace(base, **values)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None
        if isinstance(value, ProbeSettings):  # checked with the knobs that were valid, so all are named
            for problem in probe_problems(value):
                self.problem(path, problem)
        return None if len(self.problems) > before else value


def route(config: TargetsConfig, group: str | None) -> Group | str:
    """The group a release goes to: its folder's (``<container>/<group>/<app>.v<N>.sh``), or the default
    group at the top level. A sentence saying why not when the folder is no group name or names no group."""
    names = ", ".join(g.name for g in config.groups) or "none"
    if group is None:
        found = config.group(config.default_group)
        if found is None:
            return (
                f"a release at the container's top level goes to the default group {config.default_group!r}, "
                f"which is not configured (groups: {names}); upload it into a group's folder, "
                "<container>/<group>/<app>.v<N>.sh, or name the default group (defaultGroup)"
            )
        return found
    problem = group_name_problem(group)
    if problem is not None:
        return f"the release's folder {problem}; releases go to <container>/<group>/<app>.v<N>.sh (groups: {names})"
    found = config.group(group)
    if found is None:
        return f"no group {group!r} is configured (groups: {names})"
    return found


def probe_problems(probe: ProbeSettings) -> list[str]:
    """What ``rollout.settings.load_settings`` checks of a probe beyond its knobs' bounds."""
    problems = []
    if not probe.path.startswith("/"):
        problems.append(f"PROBE_PATH={probe.path!r} must start with '/'")
    if probe.body_pattern:
        try:
            re.compile(probe.body_pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            problems.append(f"PROBE_BODY_PATTERN is not a valid regular expression: {exc}")
    return problems


def group_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a group (a blob folder of the release container), or None."""
    if not isinstance(name, str):
        return f"a group name is text (got {_type_name(name)})"
    if not GROUP_NAME_RE.fullmatch(name):
        return (
            f"{_shown(name)} is not a group name (1 to 63 lower case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def duplicate_problems(groups: Sequence[Group], paths: Sequence[str] | None = None) -> list[str]:
    """Group names used twice, and scale sets (by ``TargetRef.key``) listed twice anywhere."""
    problems = []
    where: dict[str, str] = {}
    seen_groups: dict[str, str] = {}
    for gi, group in enumerate(groups):
        gpath = paths[gi] if paths is not None else f"group {group.name!r}"
        if group.name in seen_groups:
            problems.append(f"{gpath}.name: group {group.name!r} is declared twice (also {seen_groups[group.name]})")
        seen_groups.setdefault(group.name, gpath)
        for wi, wave in enumerate(group.waves):
            for ti, target in enumerate(wave.targets):
                tpath = f"{gpath}.waves[{wi}].targets[{ti}]"
                if target.key in where:
                    problems.append(
                        f"{tpath}: scale set {target.key!r} is already a target at {where[target.key]}; a scale set "
                        "is a target once (its key <resource group>:<name> is its state partition, and one group "
                        "owns its versions)"
                    )
                else:
                    where[target.key] = tpath
    return problems


def groups_from_tags(scale_sets: Iterable[TaggedScaleSet], defaults: TargetDefaults) -> tuple[list[Group], list[str]]:
    """The groups that tags form: ``canary-group=<name>`` (required) and ``canary-wave=<n>`` (1 to
    ``MAX_WAVES``, default 1) on a scale set; waves ordered by n (gaps close up), scale sets in a wave by
    key. Untagged scale sets are left out; a badly tagged one is a problem naming it."""
    problems: list[str] = []
    waves: dict[str, dict[int, list[Target]]] = {}
    for scale_set in scale_sets:
        tags = {k.lower(): v for k, v in scale_set.tags.items()}
        group = tags.get(GROUP_TAG)
        if group is None:
            continue
        where = f"scale set {scale_set.ref}"
        problem = group_name_problem(group)
        if problem is not None:
            problems.append(f"{where}: tag {GROUP_TAG}: {problem}")
            continue
        wave_text = tags.get(WAVE_TAG, "1")
        if not re.fullmatch(r"[0-9]{1,3}", wave_text) or not 1 <= int(wave_text) <= MAX_WAVES:
            problems.append(f"{where}: tag {WAVE_TAG}={_shown(wave_text)} must be a whole number from 1 to {MAX_WAVES}")
            continue
        target = Target(ref=scale_set.ref, policy=defaults.policy, probe=defaults.probe)
        waves.setdefault(group, {}).setdefault(int(wave_text), []).append(target)
    groups = [
        Group(
            name=name,
            waves=tuple(Wave(targets=tuple(sorted(by_wave[n], key=lambda t: t.key))) for n in sorted(by_wave)),
        )
        for name, by_wave in sorted(waves.items())
    ]
    if sum(len(g.targets()) for g in groups) > MAX_TARGETS:
        problems.append(f"tag discovery found more than {MAX_TARGETS} targets")
    return groups, problems


def merge_groups(
    declared: TargetsConfig | None, discovered: Sequence[Group], source: str, default_group: str = DEFAULT_GROUP
) -> TargetsConfig:
    """The document's groups and the discovered ones, as one configuration; ``TargetsDocumentError`` when a
    group name or a scale set is in both."""
    groups = (*(declared.groups if declared else ()), *discovered)
    problems = []
    declared_names = {g.name for g in declared.groups} if declared else set()
    for group in discovered:
        if group.name in declared_names:
            problems.append(f"group {group.name!r} is both declared in the document and discovered by tag")
    if not problems:
        problems = duplicate_problems(groups)
    if not groups:
        problems.append(f"no scale set is tagged {GROUP_TAG}=<group> and no document declares a group")
    if problems:
        raise TargetsDocumentError(source, problems)
    return TargetsConfig(
        groups=groups, source=source, default_group=declared.default_group if declared else default_group
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key(key: Any) -> str:
    """A key as a path step: never more than 40 characters of what the document wrote."""
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _close_match(key: str, allowed: Sequence[str]) -> str:
    lowered = {a.lower().replace("_", ""): a for a in allowed}
    match = lowered.get(key.lower().replace("_", "").replace("-", ""))
    return f" (did you mean {match}?)" if match is not None and match != key else ""
