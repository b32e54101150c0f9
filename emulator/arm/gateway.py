"""The front door every request passes: bearer token, JSON body, the admin API or the ARM API
(after injected faults), the request log, and errors as ARM error answers (never a dropped
connection: a bug in the emulator answers 500 InternalServerError and the server keeps serving)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from emulator.arm.budgets import READS_REMAINING_HEADER
from emulator.arm.model import ArmError
from emulator.arm.requestlog import RequestRecord, redact
from emulator.arm.routes import Answer, Request

if TYPE_CHECKING:
    from emulator.arm.emulator import ArmEmulator


class Gateway:
    def __init__(self, emu: ArmEmulator) -> None:
        self._emu = emu

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Route one request; returns (status, headers, JSON body or None)."""
        split = urlsplit(raw_path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        parsed: Any = None
        status: int = 500
        remaining: int | None = None  # reads left in the subscription's bucket, once this read took a token
        try:
            if headers.get("authorization", "") != f"Bearer {self._emu.token}":
                raise ArmError(
                    401,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing or its bearer token is invalid.",
                )
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError as err:
                    raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {err}") from err
            if path.startswith("/_admin/"):
                try:
                    status, out_body = self._emu.admin.dispatch(method, path, query, parsed)
                except (KeyError, ValueError, TypeError) as err:  # a malformed admin request
                    raise ArmError(400, "InvalidParameter", f"Bad admin request: {err!r}") from err
                return status, {}, out_body
            remaining = self._emu.spend_read(method, path)  # ARM's own read bucket, before the provider
            self._emu.check_faults(method, path)
            answer = self._emu.api.dispatch(Request(method, path, query, parsed))
            status = answer[0]
            if remaining is not None:
                answer = (answer[0], {**answer[1], READS_REMAINING_HEADER: str(remaining)}, answer[2])
            return answer
        except ArmError as err:
            status = err.status
            headers = err.headers if remaining is None else {**err.headers, READS_REMAINING_HEADER: str(remaining)}
            return err.status, headers, err.body()
        except Exception as err:  # a bug in the emulator: answer 500 like ARM, keep serving
            status = 500
            return 500, {}, {"error": {"code": "InternalServerError", "message": repr(err)}}
        finally:
            if not path.startswith("/_admin/"):
                self._emu.log.append(RequestRecord(method, path, query, redact(parsed), status, self._emu.clock.now()))
