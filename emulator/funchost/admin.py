"""The admin API, as the real host offers it (master key only).

``POST /admin/functions/<name>`` with ``{"input": "..."}`` fires a non-HTTP function now and answers
202 (timer: input ignored; blob: input is ``<container>/<blob name>``); ``GET /admin/host/status``
lists the functions. Any ``ManualTrigger`` kind (a queue trigger too) is reachable this way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from urllib.parse import unquote

from emulator.funchost.core import ManualTrigger, Runtime
from emulator.funchost.http import Response, json_response, text_response
from emulator.funchost.keys import HostKeys


class AdminApi:
    def __init__(
        self,
        runtime: Runtime,
        keys: Callable[[], HostKeys],
        manual: Callable[[], Mapping[str, ManualTrigger]],
        function_names: Callable[[], list[str]],
    ) -> None:
        self._runtime = runtime
        self._keys = keys
        self._manual = manual  # function name -> the trigger kind that can fire it
        self._function_names = function_names

    def handle(self, method: str, path: str, presented: str | None, body: bytes) -> Response:
        if not self._keys().authorize("admin", presented):
            return text_response(401, "Unauthorized")
        if path.rstrip("/") == "/admin/host/status" and method == "GET":
            return json_response(200, {"state": "Running", "functions": self._function_names()})
        match = re.fullmatch(r"/admin/functions/([^/]+)/?", path)
        if not match:
            return text_response(404, "Not Found")
        name = unquote(match.group(1))
        if method != "POST":
            return text_response(405, "Method Not Allowed")
        kind = self._manual().get(name)
        if kind is None:
            return text_response(404, f"no timer or blob function named {name}")
        try:
            payload = json.loads(body or b"{}")
            text = payload.get("input") if isinstance(payload, dict) else None
        except ValueError:
            return text_response(400, 'body must be JSON: {"input": "..."}')
        if kind.input_hint is not None and not text:
            return text_response(400, f'a {kind.binding_type} function needs {{"input": "{kind.input_hint}"}}')
        # 202 and run in the background, as the real admin API does.
        self._runtime.spawn_worker(f"admin:{name}", kind.fire, name, text)
        return text_response(202, "")
