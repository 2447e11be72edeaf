"""Bearer tokens for API clients: OIDC access tokens (client credentials for machines) checked
against the identity provider's published keys.

The issuer is the app's own (``auth_issuer``): its discovery document
(``<issuer>/.well-known/openid-configuration``, the same one app/auth.py's sign-in reads) names
the ``jwks_uri``; keys are fetched from there and kept, and fetched again (at most once a
minute) when a token names a key id not seen yet, so the provider may rotate keys. Verified with
joserfc (Authlib's JOSE library, already pinned): asymmetric algorithms only (never ``none`` or
an HMAC keyed with a public key), signature, ``iss``, ``aud`` (``CAPFC_API_AUDIENCE``), ``exp``
and ``nbf`` with the app's clock leeway. The token itself never reaches a log line: reasons are
logged, tokens are not.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.auth import MAX_TOKEN_CHARS, AuthError

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
REFRESH_SECONDS = 60.0  # an unknown kid fetches the key set again at most this often
DISCOVERY_SECONDS = 3600.0


def _fetch_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data = json.loads(resp.read(1_048_576))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


class TokenVerifier:
    """Verifies API access tokens (JWTs) issued by ``issuer`` for ``audience``."""

    def __init__(
        self,
        issuer: str,
        audience: str | None,
        *,
        leeway: int = 30,
        fetch: Callable[[str], dict[str, Any]] = _fetch_json,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        self.fetch = fetch
        self.clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._jwks_uri: str | None = None
        self._discovered_at = 0.0
        self._lock = threading.Lock()

    def _discover(self) -> str:
        now = self.clock()
        if self._jwks_uri and now - self._discovered_at < DISCOVERY_SECONDS:
            return self._jwks_uri
        meta = self.fetch(f"{self.issuer}/.well-known/openid-configuration")
        if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
            raise AuthError(503, "the discovery document names another issuer")
        uri = meta.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise AuthError(503, "the discovery document has no jwks_uri")
        self._jwks_uri, self._discovered_at = uri, now
        return uri

    def key_set(self, *, refresh: bool = False) -> KeySet:
        """The provider's keys: fetched once, again on ``refresh`` (rate-limited)."""
        with self._lock:
            now = self.clock()
            if self._keys is not None and not (refresh and now - self._fetched_at >= REFRESH_SECONDS):
                return self._keys
            try:
                jwks = self.fetch(self._discover())
                keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            except AuthError:
                raise
            except (urllib.error.URLError, OSError, ValueError, JoseError) as e:
                log.warning("identity provider keys could not be fetched: %s", type(e).__name__)
                if self._keys is not None:
                    return self._keys
                raise AuthError(503, "the identity provider's keys could not be fetched") from None
            self._keys, self._fetched_at = keys, now
            return keys

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`AuthError` (401, or 503 when the provider is unreachable)."""
        if not self.audience:
            raise AuthError(401, "CAPFC_API_AUDIENCE is not set: API tokens cannot be checked")
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AuthError(401, "not a signed JWT")
        keys = self.key_set()
        try:
            decoded = self._decode(token, keys)
        except _UnknownKeyError:
            decoded = self._decode(token, self.key_set(refresh=True), final=True)
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self.clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        claims = dict(decoded.claims)
        if isinstance(claims.get("iss"), str):
            claims["iss"] = claims["iss"].rstrip("/")
        try:
            registry.validate(claims)
        except JoseError as e:
            raise AuthError(401, f"token refused: {e.error}: {e.description or ''}"[:200]) from None
        return claims

    def _decode(self, token: str, keys: KeySet, *, final: bool = False) -> Any:
        try:
            return jwt.decode(token, keys, algorithms=ALGORITHMS)
        except JoseError as e:
            name = type(e).__name__
            if not final and name in ("MissingKeyError", "InvalidKeyIdError", "ValueError"):
                raise _UnknownKeyError from None
            raise AuthError(401, f"token refused: {name}") from None
        except (ValueError, KeyError, TypeError) as e:
            if not final and "key" in str(e).lower():
                raise _UnknownKeyError from None
            raise AuthError(401, f"token refused: {type(e).__name__}") from None


class _UnknownKeyError(Exception):
    """The token names a key the cached JWKS does not hold: the keys are fetched again once
    (the issuer may have rotated them) before the token is refused."""
