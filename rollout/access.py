"""Who is calling the operator API, and may they do what they ask? Pure: settings and headers in, a decision out.

Two modes (app setting ``HTTP_AUTH``):

* ``function-key``: the Functions host has checked the function key before the code runs. A key says
  nothing about a person, so the actor is recorded as ``"function key"``, never taken from a header:
  without App Service authentication nothing strips client-sent ``X-MS-CLIENT-PRINCIPAL*`` headers,
  and any key holder could write any name.
* ``entra``: App Service authentication (Microsoft Entra ID) is in front of the app. It validates the
  caller's token, strips client-sent identity headers and injects ``X-MS-CLIENT-PRINCIPAL``: "External
  requests aren't allowed to set these headers, so they're present only if set by App Service"
  (learn.microsoft.com/azure/app-service/configure-authentication-user-identities). The header is
  Base64-encoded JSON ``{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}`` (same page,
  "Decode the client principal header"); claims "go through a default claims-mapping process, so some
  might have different names", so both spellings are read: the token's own (``roles``, ``oid``, ``upn``)
  and the mapped ones of the JWT handler's inbound map (``http://schemas.microsoft.com/ws/2008/06/
  identity/claims/role``, ``.../identity/claims/objectidentifier``...; AzureAD/azure-activedirectory-
  identitymodel-extensions-for-dotnet, src/System.IdentityModel.Tokens.Jwt/ClaimTypeMapping.cs).

  The headers are only trustworthy when the platform really strips them, so entra mode also requires
  the platform's own signal ``WEBSITE_AUTH_ENABLED`` (see ``rollout.settings``): without it the app
  is misconfigured and answers 500 instead of trusting client headers (fails closed).

  App roles (the app registration's, in the token's ``roles`` claim): ``Rollouts.Read`` may list,
  view and see the fleet; ``Rollouts.Operate`` may also steer (operate implies read).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

READ_ROLE = "Rollouts.Read"
OPERATE_ROLE = "Rollouts.Operate"
FUNCTION_KEY_ACTOR = "function key"

PRINCIPAL_HEADER = "x-ms-client-principal"
MAX_PRINCIPAL_HEADER_CHARS = 64 * 1024
MAX_ACTOR_CHARS = 200

ROLE_CLAIM_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
_ROLE_CLAIMS = ("roles", "role", ROLE_CLAIM_URI)
# The caller's name, best first: a sign-in name (unique in the tenant), then a display name.
_NAME_CLAIMS = (
    "preferred_username",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "unique_name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "name",
    "email",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
)
# The caller's object id (users and service principals alike): what makes the record unambiguous.
_OID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
_APP_CLAIMS = ("azp", "appid")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Caller:
    """An authorised caller: the actor recorded in the audit trail and its app roles."""

    actor: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Denied:
    """The request must not run: 401 (no principal), 403 (missing role) or 500 (misconfigured app)."""

    status: int
    message: str


def authorize(
    mode: str, platform_auth_enabled: bool, headers: Mapping[str, str], needs: str, action: str
) -> Caller | Denied:
    """May the caller do ``action``, which needs the app role ``needs`` (READ_ROLE or OPERATE_ROLE)?"""
    if mode != "entra":
        # The host checked the function key; a key holder may do everything the API offers.
        return Caller(FUNCTION_KEY_ACTOR, frozenset({READ_ROLE, OPERATE_ROLE}))
    if not platform_auth_enabled:
        return Denied(
            500,
            "the app is misconfigured: HTTP_AUTH=entra but App Service authentication is not on "
            "(WEBSITE_AUTH_ENABLED is not True), so identity headers could come from anyone; "
            "turn App Service authentication on or set HTTP_AUTH=function-key",
        )
    raw = _header(headers, PRINCIPAL_HEADER)
    if not raw:
        return Denied(401, "not signed in: call with a Microsoft Entra access token (Authorization: Bearer ...)")
    principal = decode_principal(raw)
    if principal is None:
        return Denied(401, "the client principal header cannot be read")
    caller = caller_from_principal(principal)
    if not _allowed(caller.roles, needs):
        return Denied(403, f"{caller.actor} lacks the app role {needs} needed to {action}")
    return caller


def decode_principal(raw: str) -> dict[str, Any] | None:
    """The decoded ``X-MS-CLIENT-PRINCIPAL`` (a dict with a list of claims), or None if it is not one."""
    if len(raw) > MAX_PRINCIPAL_HEADER_CHARS:
        return None
    try:
        data = json.loads(base64.b64decode(raw.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):  # bad Base64, bad UTF-8, bad JSON, too deep
        return None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        return None
    return data


def caller_from_principal(principal: Mapping[str, Any]) -> Caller:
    claims: list[tuple[str, str]] = [
        (c["typ"], c["val"])
        for c in principal.get("claims", [])
        if isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str)
    ]
    role_typ = principal.get("role_typ")
    role_types = {*_ROLE_CLAIMS, *([role_typ] if isinstance(role_typ, str) and role_typ else [])}
    roles = frozenset(val for typ, val in claims if typ in role_types)
    name_typ = principal.get("name_typ")
    name_types = ([name_typ] if isinstance(name_typ, str) and name_typ else []) + list(_NAME_CLAIMS)
    name = _first(claims, name_types)
    oid = _first(claims, _OID_CLAIMS)
    if name and oid and name != oid:
        actor = f"{name} (oid {oid})"
    else:
        app = _first(claims, _APP_CLAIMS)
        actor = name or (f"application {app} (oid {oid})" if app and oid else oid or "an unnamed principal")
    return Caller(_printable(actor), roles)


def _first(claims: list[tuple[str, str]], types: list[str] | tuple[str, ...]) -> str:
    for wanted in types:
        for typ, val in claims:
            if typ == wanted and val.strip():
                return val.strip()
    return ""


def _allowed(roles: frozenset[str], needs: str) -> bool:
    if needs == READ_ROLE:
        return bool(roles & {READ_ROLE, OPERATE_ROLE})  # operate implies read
    return needs in roles


def _printable(text: str) -> str:
    text = _CONTROL.sub("?", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= MAX_ACTOR_CHARS else text[: MAX_ACTOR_CHARS - 3] + "..."


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


__all__ = [
    "FUNCTION_KEY_ACTOR",
    "OPERATE_ROLE",
    "READ_ROLE",
    "Caller",
    "Denied",
    "authorize",
    "caller_from_principal",
    "decode_principal",
]
