"""Who is asking: the two modes, API keys, identity-provider JWTs, and the participant identity they give.

Development mode (loopback bind and no authentication setting: what `scripts/up` runs): requests are anonymous, a
client names its own identity, and rate limits are per client address.

Production mode (TOKEN_AUTH or any credential below set, or a bind that is not loopback): every request is
authenticated, and the identity comes from that authentication, never from the body alone:

- an API key (TOKEN_API_KEYS, one per client application, sent as `Authorization: Bearer <key>` or `X-API-Key`):
  the application vouches for its own users, so the identity is `app:<name>:<participant_identity>`;
- a JWT from the application's identity provider (`Authorization: Bearer <jwt>`), HS256 with TOKEN_JWT_SECRET or
  RS256/ES256 with a key from TOKEN_JWKS_URL: the identity is `user:<sub>`.

No authenticated identity can be `tel:...` (phone callers), `agent-...` or `sip_...`: each lives in its own prefix.
Start-up stops with ConfigError (one line, exit code 2) when production mode would run with the development LiveKit
keys or without authentication.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio.to_thread
import jwt
from fastapi import HTTPException, Request

from token_server.settings import TokenServerSettings

logger = logging.getLogger("token_server.auth")

DEV_KEYS = frozenset({"devkey"})
# The repo's development secret, and `livekit-server --dev`'s.
DEV_SECRETS = frozenset({"devsecret-local-only-change-me-0123456789", "secret"})
METHODS = ("api_key", "jwt")
APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
API_KEY = re.compile(r"[\x21-\x7e]{20,256}")  # printable ASCII, no spaces, at least 20 characters
MIN_SECRET = 32
JWT_LEEWAY_S = 30
# A subject that fits the identity alphabet (models.SafeId) is used as it is; any other is hashed.
PLAIN_SUBJECT = re.compile(r"[\w.\-:@=+]{1,120}", re.ASCII)
ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}


class ConfigError(Exception):
    """A configuration the token server refuses to run with; the message is one line."""


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def parse_api_keys(text: str) -> dict[str, str]:
    """TOKEN_API_KEYS: a JSON object {"name": "key"} or a comma list name:key,name2:key2."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"TOKEN_API_KEYS is not valid JSON ({exc.msg})") from None
        if not all(isinstance(v, str) for v in raw.values()):
            raise ConfigError('TOKEN_API_KEYS must map application names to keys: {"web": "<key>"}')
        pairs = list(raw.items())
    else:
        pairs = []
        for item in text.split(","):
            name, sep, key = item.strip().partition(":")
            if not sep:
                raise ConfigError("TOKEN_API_KEYS takes name:key entries, comma-separated, or a JSON object")
            pairs.append((name.strip(), key.strip()))
    keys: dict[str, str] = {}
    for name, key in pairs:
        if not APP_NAME.fullmatch(name):
            raise ConfigError(f"TOKEN_API_KEYS: application name {name[:40]!r} must be 1-32 of a-z, 0-9, _ and -")
        if not API_KEY.fullmatch(key):
            raise ConfigError(
                f"TOKEN_API_KEYS: the key of {name!r} must be 20-256 printable characters without spaces "
                "(e.g. `openssl rand -hex 24`)"
            )
        if name in keys:
            raise ConfigError(f"TOKEN_API_KEYS: application {name!r} is listed twice")
        keys[name] = key
    if len(set(keys.values())) != len(keys):
        raise ConfigError("TOKEN_API_KEYS: two applications share one key")
    return keys


@dataclass(frozen=True)
class Security:
    """The mode and the authentication settings, checked once at start-up."""

    production: bool
    why: str = "loopback bind, no authentication configured"
    methods: tuple[str, ...] = ()
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    jwt_secret: str = field(default="", repr=False)
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""

    @classmethod
    def from_settings(cls, s: TokenServerSettings) -> Security:
        api_keys = parse_api_keys(s.token_api_keys)
        secret, jwks_url = s.token_jwt_secret.strip(), s.token_jwks_url.strip()
        reasons = []
        if s.token_auth.strip():
            reasons.append("TOKEN_AUTH is set")
        elif api_keys or secret or jwks_url:
            reasons.append("authentication is configured")
        if not is_loopback(s.token_server_host):
            reasons.append(f"TOKEN_SERVER_HOST={s.token_server_host} is not loopback")
        if not reasons:
            return cls(production=False)
        why = " and ".join(reasons)

        if s.token_auth.strip():
            methods = tuple(dict.fromkeys(m.strip().lower() for m in s.token_auth.split(",") if m.strip()))
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                raise ConfigError(f"TOKEN_AUTH: unknown method {unknown[0]!r} (use api_key, jwt or api_key,jwt)")
        else:
            methods = tuple(m for m, on in (("api_key", api_keys), ("jwt", secret or jwks_url)) if on)
        if not methods:
            raise ConfigError(
                f"production mode ({why}) needs authentication: set TOKEN_API_KEYS, TOKEN_JWT_SECRET or "
                "TOKEN_JWKS_URL (docs/deployment.md), or bind to 127.0.0.1 for development"
            )
        if "api_key" in methods and not api_keys:
            raise ConfigError("TOKEN_AUTH includes api_key but TOKEN_API_KEYS is empty")
        if "jwt" in methods and not (secret or jwks_url):
            raise ConfigError("TOKEN_AUTH includes jwt but neither TOKEN_JWT_SECRET nor TOKEN_JWKS_URL is set")
        if s.livekit_api_key in DEV_KEYS or s.livekit_api_secret in DEV_SECRETS:
            raise ConfigError(
                f"refusing to start in production mode ({why}) with the development LiveKit keys: set your own "
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET (docs/deployment.md)"
            )
        if len(s.livekit_api_secret) < MIN_SECRET:
            raise ConfigError(f"LIVEKIT_API_SECRET must be at least {MIN_SECRET} characters in production mode")
        if "jwt" in methods:
            if secret and len(secret) < MIN_SECRET:
                raise ConfigError(f"TOKEN_JWT_SECRET must be at least {MIN_SECRET} characters")
            if jwks_url:
                url = urlsplit(jwks_url)
                if not (url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname or ""))):
                    raise ConfigError("TOKEN_JWKS_URL must be an https:// URL (http:// only on loopback)")
                if not s.token_jwt_audience.strip():
                    raise ConfigError(
                        "TOKEN_JWKS_URL needs TOKEN_JWT_AUDIENCE: without it a token the identity provider issued to "
                        "any other application would be accepted"
                    )
        if s.token_metrics_port and s.token_metrics_port == s.token_server_port:
            raise ConfigError("TOKEN_METRICS_PORT must differ from TOKEN_SERVER_PORT")
        return cls(
            production=True,
            why=why,
            methods=methods,
            api_keys=api_keys if "api_key" in methods else {},
            jwt_secret=secret if "jwt" in methods else "",
            jwks_url=jwks_url if "jwt" in methods else "",
            issuer=s.token_jwt_issuer.strip(),
            audience=s.token_jwt_audience.strip(),
        )


@dataclass(frozen=True)
class Principal:
    """Who a request comes from. `name`: the application (api_key), the JWT subject (jwt), the address (dev)."""

    method: str
    name: str
    rate_key: str
    display_name: str | None = None

    @property
    def knows_identity(self) -> bool:
        """True when the identity does not depend on the request (a JWT's subject)."""
        return self.method == "jwt"

    def identity(self, requested: str | None) -> str:
        """The participant identity for a request that asked for `requested` (already checked: not reserved)."""
        if self.method == "jwt":
            own = subject_identity(self.name)
            if requested is not None and requested not in (self.name, own):
                raise HTTPException(
                    403, f"participant_identity comes from your sign-in here: leave it out or send '{self.name}'"
                )
            return own
        user = requested or f"user-{secrets.token_hex(6)}"
        return f"app:{self.name}:{user}" if self.method == "api_key" else user


def subject_identity(sub: str) -> str:
    if PLAIN_SUBJECT.fullmatch(sub):
        return f"user:{sub}"
    return f"userh:{hashlib.sha256(sub.encode()).hexdigest()[:32]}"


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


class JWKS:
    """The identity provider's public keys, fetched from TOKEN_JWKS_URL and cached.

    Refetched after `ttl_s`, or sooner for a key id it does not know (key rotation), but at most once every
    `min_refresh_s`, so tokens with made-up key ids cannot make the server hammer the provider; after a failed fetch
    the keys it has stay in use and the next try waits `min_refresh_s` too.
    """

    def __init__(self, url: str, ttl_s: float = 300.0, min_refresh_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.url, self.ttl_s, self.min_refresh_s, self.timeout_s = url, ttl_s, min_refresh_s, timeout_s
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched = -math.inf
        self._retry_at = -math.inf  # after a failed fetch, none before this
        self._lock = asyncio.Lock()

    def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        request = urllib.request.Request(self.url, headers={"accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (checked scheme)
            data = json.loads(response.read(1_000_001)[:1_000_000])
        keys = jwt.PyJWKSet.from_dict(data).keys
        return {key.key_id: key for key in keys if key.key_type in ASYMMETRIC.values()}

    async def _refresh(self, seen: float) -> None:
        async with self._lock:
            if self._fetched != seen or time.monotonic() < self._retry_at:  # another request did it meanwhile
                return
            try:
                self._keys = await anyio.to_thread.run_sync(self._fetch)
                self._fetched = time.monotonic()
            except Exception as exc:  # network, JSON or key errors: keep the keys there are, retry later
                logger.warning("fetching TOKEN_JWKS_URL failed: %s", exc)
                self._retry_at = time.monotonic() + self.min_refresh_s

    async def key(self, kid: object, alg: str) -> jwt.PyJWK:
        if kid is not None and not isinstance(kid, str):
            raise unauthorized("identity token: kid must be a string")
        now, keys = time.monotonic(), self._keys
        age = now - self._fetched
        due = keys is None or age > self.ttl_s or (kid not in keys and age >= self.min_refresh_s)
        if due and now >= self._retry_at:
            await self._refresh(self._fetched)
        keys = self._keys
        if keys is None:
            raise HTTPException(503, "the identity provider's keys (TOKEN_JWKS_URL) are unavailable")
        key = keys.get(kid) if kid is not None or len(keys) != 1 else next(iter(keys.values()))
        if key is None:
            raise unauthorized("identity token: signed by a key the identity provider does not list")
        declared = getattr(key, "_jwk_data", {}).get("alg")
        if key.key_type != ASYMMETRIC[alg] or (declared and declared != alg):
            raise unauthorized(f"identity token: key {kid!r} is not a {alg} key")
        return key


class Authenticator:
    """Production-mode authentication of one request: returns its Principal or raises 401 (503 without JWKS)."""

    def __init__(self, security: Security) -> None:
        self.security = security
        # Keys compared as SHA-256 digests, each one every time: no early exit tells which prefix matched.
        self._keys = [(name, hashlib.sha256(key.encode()).digest()) for name, key in security.api_keys.items()]
        self.jwks = JWKS(security.jwks_url) if security.jwks_url else None

    def _api_key(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode("latin-1")).digest()  # header values are latin-1 text
        found = None
        for name, expected in self._keys:
            if hmac.compare_digest(digest, expected):
                found = name
        return found

    async def __call__(self, request: Request) -> Principal:
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization")
        if api_key is not None:
            name = self._api_key(api_key.strip()) if self._keys else None
            if name is None:
                raise unauthorized("unknown API key")
            return Principal("api_key", name, f"key:{name}")
        if authorization is None:
            raise unauthorized(
                "authentication required: send Authorization: Bearer <API key or identity token>, or X-API-Key"
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthorized("use Authorization: Bearer <API key or identity token>")
        if self._keys and (name := self._api_key(credential)) is not None:
            return Principal("api_key", name, f"key:{name}")
        if "jwt" in self.security.methods and credential.count(".") == 2:
            return await self._jwt(credential)
        raise unauthorized("unknown API key" if self._keys else "the bearer credential is not a JWT")

    async def _jwt(self, token: str) -> Principal:
        security = self.security
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise unauthorized(f"identity token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise unauthorized("identity token: alg must be a string")
        if alg == "HS256" and security.jwt_secret:
            key: object = security.jwt_secret
        elif alg in ASYMMETRIC and self.jwks is not None:
            key = (await self.jwks.key(header.get("kid"), alg)).key
        else:
            raise unauthorized(f"identity token: algorithm {str(alg)[:20]!r} is not accepted here")
        required = ["exp", "sub", *(["iss"] if security.issuer else []), *(["aud"] if security.audience else [])]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=security.audience or None,
                issuer=security.issuer or None,
                leeway=JWT_LEEWAY_S,
                options={"require": required, "verify_aud": bool(security.audience)},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise unauthorized(f"identity token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 255:
            raise unauthorized("identity token: sub must be a non-empty string of at most 255 characters")
        name = claims.get("name")
        display = name if isinstance(name, str) and 0 < len(name) <= 128 and name.isprintable() else None
        return Principal("jwt", sub, f"sub:{sub}", display)
