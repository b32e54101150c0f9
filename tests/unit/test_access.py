"""Who may call the operator API: function-key mode, and Entra ID principals with app roles."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from rollout.access import (
    FUNCTION_KEY_ACTOR,
    OPERATE_ROLE,
    READ_ROLE,
    Caller,
    Denied,
    authorize,
    decode_principal,
)

ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OID_URI = "http://schemas.microsoft.com/identity/claims/objectidentifier"
OID = "9f1c1e52-0000-4000-8000-00000000a11c"


def principal(claims: list[tuple[str, str]], **extra: Any) -> str:
    """X-MS-CLIENT-PRINCIPAL as documented: Base64 JSON {auth_typ, claims[{typ, val}], name_typ, role_typ}."""
    body = {
        "auth_typ": "aad",
        "claims": [{"typ": t, "val": v} for t, v in claims],
        "name_typ": NAME_URI,
        "role_typ": ROLE_URI,
        **extra,
    }
    return base64.b64encode(json.dumps(body).encode()).decode()


def entra(headers: dict[str, str], needs: str = READ_ROLE, platform: bool = True) -> Caller | Denied:
    return authorize("entra", platform, headers, needs, "do it")


def test_function_key_mode_never_takes_the_actor_from_a_header() -> None:
    forged = {"x-ms-client-principal-name": "the CEO", "X-MS-CLIENT-PRINCIPAL": principal([("name", "the CEO")])}
    caller = authorize("function-key", False, forged, OPERATE_ROLE, "steer")
    assert caller == Caller(FUNCTION_KEY_ACTOR, frozenset({READ_ROLE, OPERATE_ROLE}))


@pytest.mark.parametrize(
    ("claims", "actor"),
    [
        # Claims under the token's own names (roles, oid, preferred_username)...
        (
            [("roles", OPERATE_ROLE), ("preferred_username", "ada@contoso.com"), ("oid", OID)],
            f"ada@contoso.com (oid {OID})",
        ),
        # ... or mapped by the default claims mapping (role and objectidentifier URIs, upn URI).
        (
            [
                (ROLE_URI, OPERATE_ROLE),
                ("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", "ada@contoso.com"),
                (OID_URI, OID),
            ],
            f"ada@contoso.com (oid {OID})",
        ),
        # An application (client credentials): no user name, its client id and object id.
        (
            [("roles", OPERATE_ROLE), ("azp", "11111111-2222-3333-4444-555555555555"), ("oid", OID)],
            f"application 11111111-2222-3333-4444-555555555555 (oid {OID})",
        ),
    ],
)
def test_an_operator_is_recorded_by_name_and_may_steer(claims: list[tuple[str, str]], actor: str) -> None:
    caller = entra({"X-MS-CLIENT-PRINCIPAL": principal(claims)}, OPERATE_ROLE)
    assert isinstance(caller, Caller) and caller.actor == actor
    assert entra({"x-ms-client-principal": principal(claims)}, READ_ROLE) == caller  # operate implies read


def test_a_reader_may_read_but_not_steer() -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": principal([("roles", READ_ROLE), ("name", "Rita Reader")])}
    assert isinstance(entra(headers, READ_ROLE), Caller)
    denied = entra(headers, OPERATE_ROLE)
    assert denied == Denied(403, f"Rita Reader lacks the app role {OPERATE_ROLE} needed to do it")


def test_no_role_at_all_is_a_403_naming_the_role() -> None:
    denied = entra({"X-MS-CLIENT-PRINCIPAL": principal([("name", "Nobody")])}, READ_ROLE)
    assert isinstance(denied, Denied) and denied.status == 403 and READ_ROLE in denied.message


def test_the_role_claim_type_the_platform_names_is_honoured() -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": principal([("custom-role", READ_ROLE)], role_typ="custom-role")}
    assert isinstance(entra(headers), Caller)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 !!",
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"claims": "nope"}').decode(),
        base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(),
        "A" * 100_000,
    ],
)
def test_no_or_an_unreadable_principal_is_a_401(value: str) -> None:
    denied = entra({"X-MS-CLIENT-PRINCIPAL": value} if value else {})
    assert isinstance(denied, Denied) and denied.status == 401
    assert decode_principal(value) is None or value == ""


def test_entra_mode_without_platform_authentication_fails_closed() -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": principal([("roles", OPERATE_ROLE), ("name", "Mallory")])}
    denied = entra(headers, OPERATE_ROLE, platform=False)
    assert isinstance(denied, Denied) and denied.status == 500
    assert "misconfigured" in denied.message and "WEBSITE_AUTH_ENABLED" in denied.message


def test_a_hostile_name_is_recorded_printable_and_short() -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": principal([("roles", READ_ROLE), ("name", "evil\nname\x00" + "x" * 500)])}
    caller = entra(headers)
    assert isinstance(caller, Caller)
    assert "\n" not in caller.actor and "\x00" not in caller.actor and len(caller.actor) <= 200
