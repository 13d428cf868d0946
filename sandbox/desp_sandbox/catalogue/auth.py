"""Bearer-token checks for the cache and the order endpoint: RS256 JWTs verified against the IdP's JWKS.

A request is authenticated by `Authorization: Bearer <JWT>` or by HTTP Basic whose password is such a JWT (any user
name: that is how `~/.netrc` credentials reach a server). Accepted token types are access tokens (`Bearer`) and
refresh tokens (`Refresh`, `Offline`), as the platform's cache accepts a refresh token from `~/.netrc`. The key set is
fetched lazily (the IdP may start after us) and fetched again when a token names an unknown key id, at most every
few seconds. Error messages are short and never contain the token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ALGORITHMS = ["RS256"]
TOKEN_TYPES = {"Bearer", "Refresh", "Offline"}
REFETCH_INTERVAL = 5.0


class Unauthorized(Exception):
    """No usable credentials; the message is safe to send back."""


def token_from_header(authorization: str | None) -> str:
    """The JWT carried by an Authorization header (Bearer, or Basic with the JWT as password)."""
    if not authorization:
        raise Unauthorized("Authorization required: Bearer token or Basic credentials with a token as password")
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic credentials") from None
        _, separator, password = decoded.partition(":")
        if separator and password:
            return password
        raise Unauthorized("Basic credentials without a password")
    raise Unauthorized("Unsupported Authorization scheme")


class TokenVerifier:
    """Verifies JWTs against the JWKS at `jwks_url` (and their issuer, if `issuer` is set)."""

    def __init__(self, jwks_url: str, issuer: str | None = None, leeway: int = 5):
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.leeway = leeway
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _key_set(self, refresh: bool = False) -> KeySet:
        async with self._lock:
            stale = refresh and time.monotonic() - self._fetched_at > REFETCH_INTERVAL
            if self._keys is None or stale:
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        response = await client.get(self.jwks_url)
                        response.raise_for_status()
                        self._keys = KeySet.import_key_set(response.json())
                except (httpx.HTTPError, ValueError, JoseError) as error:
                    raise Unauthorized(f"Token keys unavailable ({type(error).__name__})") from None
                self._fetched_at = time.monotonic()
            return self._keys

    async def verify(self, token: str) -> dict:
        """The token's claims, or Unauthorized."""
        keys = await self._key_set()
        try:
            try:
                claims = jwt.decode(token, keys, algorithms=ALGORITHMS).claims
            except JoseError:
                # maybe a rotated key: refetch once, then decide
                claims = jwt.decode(token, await self._key_set(refresh=True), algorithms=ALGORITHMS).claims
        except (JoseError, ValueError):
            raise Unauthorized("Token verification failed") from None
        if self.issuer and claims.get("iss") != self.issuer:
            raise Unauthorized("Invalid token issuer")
        if claims.get("typ", "Bearer") not in TOKEN_TYPES:
            raise Unauthorized("Invalid token type")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp + self.leeway < time.time():
            raise Unauthorized("Token is not active")
        return claims

    async def check(self, authorization: str | None) -> dict:
        """Claims of the token in an Authorization header, or Unauthorized."""
        return await self.verify(token_from_header(authorization))
