"""App Service authentication ("Easy Auth", Microsoft Entra ID provider) in front of the local Functions host.

In Azure, App Service authentication runs before the Functions host: it validates the caller's bearer
token, answers 401 when ``requireAuthentication`` is on and ``unauthenticatedClientAction`` is
``Return401`` (infra/ sets both), removes identity headers a client sent itself ("External requests
aren't allowed to set these headers, so they're present only if set by App Service") and injects the
validated caller as ``X-MS-CLIENT-PRINCIPAL`` (Base64-encoded JSON ``{"auth_typ", "claims": [{"typ",
"val"}], "name_typ", "role_typ"}``), ``X-MS-CLIENT-PRINCIPAL-NAME``, ``-ID`` and ``-IDP``
(learn.microsoft.com/azure/app-service/configure-authentication-user-identities). The platform also
sets ``WEBSITE_AUTH_ENABLED`` for the app ("Injected into a Windows or Linux app to indicate whether App
Service authentication is enabled", learn.microsoft.com/azure/app-service/reference-app-settings).

Here Microsoft Entra ID is stood in for by ``LocalTokenIssuer``: an RSA key pair, an issuer and an
audience; its RS256 JWTs carry the claims an Entra access token for an API with app roles carries
(``roles``, ``oid``, ``preferred_username``/``name``, ``azp``, ``tid``). ``EasyAuth`` validates them the
way the platform does (signature, issuer, audience, lifetime) and builds the headers.

Not documented, so a switch (``claim_names``) instead of a guess: which claim names the principal
header uses. The page above says the claims "go through a default claims-mapping process, so some
might have different names than you would see if you processed the token directly". ``"token"``
passes the token's own names (``roles``, ``oid``); ``"mapped"`` applies the JWT handler's default
inbound map (``roles`` -> ``http://schemas.microsoft.com/ws/2008/06/identity/claims/role``, ``oid`` ->
``http://schemas.microsoft.com/identity/claims/objectidentifier``, ...; AzureAD/azure-activedirectory-
identitymodel-extensions-for-dotnet, src/System.IdentityModel.Tokens.Jwt/ClaimTypeMapping.cs). The app
must work under both. Not emulated: sign-in redirects, sessions and cookies, the token store and
``/.auth/*`` endpoints, other identity providers, ``excludedPaths``; ``/admin/*`` of the local host is
not behind it.

CLI, for trying entra mode by hand with ``python -m emulator.funchost --easy-auth ...``::

    python -m emulator.easyauth keygen .easyauth          # .easyauth/key.pem (private), .easyauth/key.pub.pem
    python -m emulator.easyauth token --key .easyauth/key.pem --role Rollouts.Operate --name ada@contoso.com
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "EasyAuth",
    "EasyAuthSettings",
    "LocalTokenIssuer",
    "PLATFORM_ENV",
]

LOCAL_TENANT = "00000000-0000-4000-8000-00000000feed"
DEFAULT_ISSUER = f"https://login.microsoftonline.com/{LOCAL_TENANT}/v2.0"
DEFAULT_AUDIENCE = "api://vmss-canary-local"
# What the platform injects into the app's environment when authentication is on (see above).
PLATFORM_ENV = {"WEBSITE_AUTH_ENABLED": "True"}

NAME_CLAIM_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_CLAIM_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
# The JWT handler's default inbound claim-type map, for the claims an Entra access token carries.
INBOUND_CLAIM_MAP = {
    "roles": ROLE_CLAIM_URI,
    "role": ROLE_CLAIM_URI,
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "scp": "http://schemas.microsoft.com/identity/claims/scope",
    "upn": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "unique_name": NAME_CLAIM_URI,
    "sub": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
    "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "given_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/givenname",
    "family_name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/surname",
    "amr": "http://schemas.microsoft.com/claims/authnmethodsreferences",
    "acr": "http://schemas.microsoft.com/claims/authnclassreference",
    "idp": "http://schemas.microsoft.com/identity/claims/identityprovider",
}
CLAIM_NAMES = ("token", "mapped")
_STRIPPED_PREFIXES = ("x-ms-client-principal", "x-ms-token-")


@dataclass(frozen=True)
class EasyAuthSettings:
    """The authsettingsV2 parts that matter here: the Entra registration and global validation."""

    issuer: str
    audiences: tuple[str, ...]
    public_key_pem: bytes = field(repr=False)
    require_authentication: bool = True  # globalValidation.requireAuthentication, with Return401
    claim_names: str = "token"  # "token" | "mapped": see the module docstring
    leeway_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.claim_names not in CLAIM_NAMES:
            raise ValueError(f"claim_names must be one of {CLAIM_NAMES}, not {self.claim_names!r}")
        if not self.audiences:
            raise ValueError("at least one allowed audience is needed")


@dataclass(frozen=True)
class Verdict:
    """What authentication decided: ``status`` 401 to answer at once, or None and the headers to pass on."""

    status: int | None
    headers: dict[str, str]
    reason: str = ""


class EasyAuth:
    """Validates bearer tokens and rewrites identity headers, as App Service authentication does."""

    def __init__(self, settings: EasyAuthSettings) -> None:
        self.settings = settings
        self._key = serialization.load_pem_public_key(settings.public_key_pem)

    def apply(self, headers: Mapping[str, str]) -> Verdict:
        # Client-sent identity headers never reach the app, whatever happens next.
        passed = {k: v for k, v in headers.items() if not k.lower().startswith(_STRIPPED_PREFIXES)}
        token = _bearer(passed)
        if token is None:
            if self.settings.require_authentication:
                return Verdict(401, passed, "no bearer token")
            return Verdict(None, passed)
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                audience=list(self.settings.audiences),
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            # An invalid token is refused even where anonymous calls are allowed: it is not anonymous.
            return Verdict(401, passed, f"invalid token: {error}")
        principal = self.principal(claims)
        passed["X-MS-CLIENT-PRINCIPAL"] = base64.b64encode(json.dumps(principal).encode()).decode("ascii")
        passed["X-MS-CLIENT-PRINCIPAL-IDP"] = "aad"
        name = _first(claims, ("preferred_username", "upn", "unique_name", "name", "email"))
        if name:
            passed["X-MS-CLIENT-PRINCIPAL-NAME"] = name
        oid = _first(claims, ("oid", "sub"))
        if oid:
            passed["X-MS-CLIENT-PRINCIPAL-ID"] = oid
        return Verdict(None, passed)

    def principal(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The decoded X-MS-CLIENT-PRINCIPAL for a validated token's claims."""
        mapped = self.settings.claim_names == "mapped"
        out: list[dict[str, str]] = []
        for name, value in claims.items():
            typ = INBOUND_CLAIM_MAP.get(name, name) if mapped else name
            for item in value if isinstance(value, list) else [value]:
                out.append({"typ": typ, "val": item if isinstance(item, str) else json.dumps(item)})
        return {"auth_typ": "aad", "claims": out, "name_typ": NAME_CLAIM_URI, "role_typ": ROLE_CLAIM_URI}


class LocalTokenIssuer:
    """Stands in for Microsoft Entra ID: mints RS256 access tokens for one API (audience)."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey | None = None,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self._key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.issuer = issuer
        self.audience = audience
        self.tenant_id = LOCAL_TENANT

    @classmethod
    def from_pem(cls, pem: bytes, **kwargs: Any) -> LocalTokenIssuer:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the key must be an RSA private key")
        return cls(key, **kwargs)

    @property
    def private_key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def settings(self, **kwargs: Any) -> EasyAuthSettings:
        """Easy Auth configured to trust this issuer for its audience."""
        return EasyAuthSettings(
            issuer=self.issuer, audiences=(self.audience,), public_key_pem=self.public_key_pem, **kwargs
        )

    def token(
        self,
        *,
        roles: Iterable[str] = (),
        name: str | None = None,
        preferred_username: str | None = None,
        oid: str | None = None,
        app_id: str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46",  # the caller's client (here: Azure CLI's id)
        lifetime_seconds: int = 3600,
        audience: str | None = None,
        issuer: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience or self.audience,
            "iss": issuer or self.issuer,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + lifetime_seconds,
            "tid": self.tenant_id,
            "oid": oid or str(uuid.uuid4()),
            "sub": str(uuid.uuid4()),
            "azp": app_id,
            "ver": "2.0",
        }
        roles = list(roles)
        if roles:
            claims["roles"] = roles
        if name is not None:
            claims["name"] = name
        if preferred_username is not None:
            claims["preferred_username"] = preferred_username
        claims.update(extra or {})
        return jwt.encode(claims, self._key, algorithm="RS256")


def _bearer(headers: Mapping[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return token.strip()
    return None


def _first(claims: Mapping[str, Any], names: Iterable[str]) -> str:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.easyauth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write key.pem (private, 0600) and key.pub.pem into DIR")
    keygen.add_argument("dir")
    mint = sub.add_parser("token", help="print an access token signed with --key")
    mint.add_argument("--key", required=True, help="the private key PEM from keygen")
    mint.add_argument("--issuer", default=DEFAULT_ISSUER)
    mint.add_argument("--audience", default=DEFAULT_AUDIENCE)
    mint.add_argument("--role", action="append", default=[], help="an app role (repeatable)")
    mint.add_argument("--name", help="preferred_username, e.g. ada@contoso.com")
    mint.add_argument("--lifetime", type=int, default=3600)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        issuer = LocalTokenIssuer()
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(issuer.private_key_pem)
        (folder / "key.pub.pem").write_bytes(issuer.public_key_pem)
        print(f"wrote {folder / 'key.pem'} and {folder / 'key.pub.pem'}")
        return 0
    issuer = LocalTokenIssuer.from_pem(Path(args.key).read_bytes(), issuer=args.issuer, audience=args.audience)
    print(issuer.token(roles=args.role, preferred_username=args.name, lifetime_seconds=args.lifetime))
    return 0


if __name__ == "__main__":
    sys.exit(main())
