"""Targets, groups and waves: which scale sets a release goes to, and in what order (issue 10).

A *target* is one scale set (subscription, resource group, name) with its own rollout policy and
probe (the app's defaults with the target's overrides applied). A *group* is an ordered list of
waves, each wave a list of targets, with a bake between waves and what to do when a target rolls
back. A release blob names its group (``<container>/<group>/<app>.v<N>.sh``; no folder: the default
group). Today's ``VMSS_*`` settings are the implicit default group of one wave of one target.

This module holds the value types every part shares (the loader, the wave engine, the fan-out);
it is pure: no I/O, no ``azure.*``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from rollout.policy import RolloutPolicy
from rollout.settings import ProbeSettings

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class TargetRef:
    """Where a scale set is. ``key`` is its PartitionKey in the state tables."""

    subscription_id: str
    resource_group: str
    name: str

    @property
    def key(self) -> str:
        """``<resource group>:<name>``, lower case (as ``Settings.target_key`` always was). Two targets
        of one configuration may not share it (the loader says so): rows written before groups existed
        keep their key."""
        return f"{self.resource_group}:{self.name}".lower()

    def __str__(self) -> str:
        return f"{self.subscription_id}/{self.resource_group}/{self.name}"


@dataclass(frozen=True)
class Target:
    """A scale set with the policy and probe its rollouts use (defaults plus its overrides)."""

    ref: TargetRef
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    probe: ProbeSettings = field(default_factory=ProbeSettings)

    @property
    def key(self) -> str:
        return self.ref.key


@dataclass(frozen=True)
class Wave:
    targets: tuple[Target, ...]


class OnFailure(enum.StrEnum):
    """What a target rolling back does to the waves before it."""

    HALT = "halt"  # later waves never start; earlier waves keep the release
    ROLLBACK_ALL = "rollback-all"  # earlier waves go back to their previous release too


@dataclass(frozen=True)
class Group:
    name: str
    waves: tuple[Wave, ...]
    wave_bake_seconds: int = 0
    on_failure: OnFailure = OnFailure.HALT

    def targets(self) -> tuple[Target, ...]:
        return tuple(t for wave in self.waves for t in wave.targets)


@dataclass(frozen=True)
class TargetsConfig:
    """Every group the app steers. ``source`` says where it came from (shown by ``GET /api/targets``)."""

    groups: tuple[Group, ...]
    source: str = "settings"
    default_group: str = DEFAULT_GROUP

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def targets(self) -> tuple[Target, ...]:
        """Every target once, in group and wave order."""
        seen: dict[str, Target] = {}
        for group in self.groups:
            for target in group.targets():
                seen.setdefault(target.key, target)
        return tuple(seen.values())


def single_target_config(ref: TargetRef, policy: RolloutPolicy, probe: ProbeSettings) -> TargetsConfig:
    """Today's ``VMSS_*`` settings: the default group, one wave of one target."""
    target = Target(ref=ref, policy=policy, probe=probe)
    return TargetsConfig(groups=(Group(name=DEFAULT_GROUP, waves=(Wave(targets=(target,)),)),), source="settings")
