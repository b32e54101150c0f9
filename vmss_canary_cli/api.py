"""The operator API over HTTP (README, "The operator API"): one client, every answer checked.

Authentication, as the app's ``HTTP_AUTH`` wants it:

* a function key in the ``x-functions-key`` header (``HTTP_AUTH=function-key``; learn.microsoft.com/azure/
  azure-functions/functions-bindings-http-webhook-trigger, "API key authorization");
* a Microsoft Entra access token as ``Authorization: Bearer`` (``HTTP_AUTH=entra``): given as it is, or
  obtained for ``scope`` (``api://<client id>/.default``) from ``azure.identity.DefaultAzureCredential``
  (environment, workload or managed identity, then the Azure CLI's sign-in: learn.microsoft.com/python/api/
  azure-identity/azure.identity.defaultazurecredential).

Every failure is a ``CliError`` with its exit code (``vmss_canary_cli.exits``): never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from vmss_canary_cli.exits import CliError, ExitCode

USER_AGENT = "vmss-canary-cli/0.1"


def api_base(url: str | None) -> str:
    """The API's base URL (``https://<app>.azurewebsites.net/api``) from what the operator gave: the app's
    URL with or without ``/api``."""
    if not url or not url.strip():
        raise CliError("no API URL: pass --url or set VMSS_CANARY_URL (the function app's URL)", ExitCode.BAD_INPUT)
    url = url.strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")) or len(url) > 2000 or any(c.isspace() for c in url):
        raise CliError(f"the API URL must be an http(s) URL, not {_short(url)}", ExitCode.BAD_INPUT)
    return url if url.endswith("/api") else f"{url}/api"


def token_for_scope(scope: str) -> str:
    """An Entra access token for ``scope`` from ``DefaultAzureCredential`` (azure-identity)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise CliError("--scope needs azure-identity: pip install 'vmss-canary[cli]'", ExitCode.BAD_INPUT) from None
    try:
        credential = DefaultAzureCredential()
        try:
            return str(credential.get_token(scope).token)
        finally:
            credential.close()
    except Exception as exc:  # noqa: BLE001 - ClientAuthenticationError, ValueError for a bad scope, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot get an Entra token for {scope!r}: {_short(first, 300)}", ExitCode.AUTH) from None


class Api:
    """``GET``/``POST`` on the operator API; answers are JSON objects, failures ``CliError``."""

    def __init__(
        self,
        url: str | None,
        *,
        key: str | None = None,
        token: str | None = None,
        scope: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = api_base(url)
        self.timeout = timeout
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key and (token or scope):
            raise CliError("give a function key or an Entra token (--token/--scope), not both", ExitCode.BAD_INPUT)
        if token and scope:
            raise CliError("give --token or --scope, not both", ExitCode.BAD_INPUT)
        self._key, self._token, self._scope = key, token, scope
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _auth_headers(self) -> dict[str, str]:
        if self._key:
            return {"x-functions-key": self._key}
        if self._scope and not self._token:
            self._token = token_for_scope(self._scope)
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base}/{path}"
        try:
            response = self._session.request(
                method,
                url,
                headers={**self.headers, **self._auth_headers()},
                json=body,
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise CliError(f"cannot reach the API at {self.base}: {_reason(exc)}", ExitCode.UNREACHABLE) from None
        except requests.RequestException as exc:  # an invalid URL, a bad header value
            raise CliError(f"cannot call {_short(url)}: {_reason(exc)}", ExitCode.BAD_INPUT) from None
        return _answer(method, path, response)


def _answer(method: str, path: str, response: requests.Response) -> dict[str, Any]:
    status = response.status_code
    payload: Any = None
    try:
        payload = response.json() if response.content else None
    except ValueError:
        payload = None
    said = payload.get("error") if isinstance(payload, dict) and isinstance(payload.get("error"), str) else None
    if status == 200:
        if not isinstance(payload, dict):
            raise CliError(f"{method} /api/{path}: 200 but the answer is not a JSON object", ExitCode.API_ERROR)
        return payload
    text = said or (response.text.strip()[:200] if response.text else "") or response.reason or ""
    where = f"{method} /api/{path}"
    if status == 401:
        hint = (
            said
            or "no or a wrong credential: pass --key (VMSS_CANARY_KEY) for a function key, or --token/--scope "
            "(VMSS_CANARY_TOKEN, VMSS_CANARY_SCOPE) for Microsoft Entra ID"
        )
        raise CliError(f"401 Unauthorized ({where}): {hint}", ExitCode.AUTH)
    if status == 403:
        raise CliError(f"403 Forbidden ({where}): {text}", ExitCode.AUTH)
    if status == 404:
        if said is None:  # the host's own 404: the route does not exist on this app
            raise CliError(f"404 ({where}): this API has no such route ({text})", ExitCode.NOT_FOUND)
        raise CliError(f"404: {said}", ExitCode.NOT_FOUND)
    if status in (400, 405, 409, 413):
        raise CliError(f"{status} ({where}): {text}", ExitCode.REFUSED)
    if status in (502, 503, 504):
        raise CliError(f"{status} ({where}): the API is unavailable: {text}", ExitCode.UNREACHABLE)
    raise CliError(f"{status} ({where}): {text}", ExitCode.API_ERROR)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, in one short line (no traceback, no object reprs)."""
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in str(exc):
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return text if len(text) <= 200 else text[:200] + "..."


def _short(text: str, limit: int = 80) -> str:
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")
