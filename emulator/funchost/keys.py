"""The host's keys and the auth levels of HTTP functions (function key, master key)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEYS_FILE = "host_keys.json"


@dataclass(frozen=True)
class HostKeys:
    """The host's keys: the default function key (valid for every function) and the master key."""

    function_key: str
    master_key: str

    @staticmethod
    def generate() -> HostKeys:
        return HostKeys(function_key=secrets.token_urlsafe(32), master_key=secrets.token_urlsafe(32))

    @staticmethod
    def load_or_create(path: Path) -> HostKeys:
        """The keys in ``path`` (as the real host's key storage keeps them across restarts), or new ones."""
        if path.exists():
            data = json.loads(path.read_text())
            return HostKeys(function_key=data["functionKeys"]["default"], master_key=data["masterKey"])
        keys = HostKeys.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created with 0600 from the start (not chmod after writing): the keys are never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"masterKey": keys.master_key, "functionKeys": {"default": keys.function_key}}, handle)
        return keys

    def authorize(self, auth_level: str, presented: str | None) -> bool:
        """ANONYMOUS is open, FUNCTION takes the function key or the master key, ADMIN only the master key."""
        if auth_level == "anonymous":
            return True
        if presented is None:
            return False
        # Constant-time comparisons: the key is a secret and the comparison is reachable remotely.
        is_master = secrets.compare_digest(presented, self.master_key)
        if auth_level == "admin":
            return is_master
        return is_master or secrets.compare_digest(presented, self.function_key)
