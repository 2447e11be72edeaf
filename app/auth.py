"""Who is signed in, and what they may do: the one place the app learns the user's identity.

Three modes (``CAPFC_AUTH_MODE``), one gate (:func:`install`):

- ``alb``: an AWS Application Load Balancer signs users in (its ``authenticate-oidc`` action) and
  forwards each request with ``x-amzn-oidc-data``, a JWT it signs with ES256. The header is
  verified here on every request (:class:`AlbVerifier`): algorithm, signer (our ALB's ARN),
  signature with the ALB's public key fetched by ``kid``, expiry, issuer. A request that did not
  come through the ALB has no valid header and is refused (401): the header is never trusted
  unverified.
- ``oidc``: the app signs users in itself (App Runner, ECS Express: no ALB in front): OpenID
  Connect Authorization Code flow with PKCE through Authlib, the ID token checked (signature by
  the provider's JWKS, iss, aud, exp, nonce), the identity kept in Flask's signed session cookie
  (Secure, HttpOnly, SameSite=Lax).
- ``dev``: no sign-in, for ``make run`` on a laptop: everyone is *dev-admin*, a banner says so
  on every page, and only this machine (loopback) is served.

Roles come from the identity provider's groups (``auth_groups_claim``, mapped by
``auth_role_groups``): *viewer* reads and exports, *planner* also runs what-ifs and
re-forecasts, *admin* may do everything. :func:`current_user` is what logs, rate limits, audit
events and page layouts ask; :func:`required_permission` is the server-side check that refuses a
viewer's what-if or re-forecast callback with a 403, whatever the browser shows or sends.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import flask
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flask import Response, g, has_request_context, request, session

from forecasting.observability import audit, bind_context
from forecasting.settings import ROLES, Settings, SettingsError

from . import ids

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- roles

PERMISSIONS = ("read", "export", "whatif", "reforecast", "decide", "admin")
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read", "export"}),
    "planner": frozenset({"read", "export", "whatif", "reforecast", "decide"}),
    "admin": frozenset(PERMISSIONS),
}
PERMISSION_WORDS = {
    "whatif": "run what-ifs",
    "reforecast": "re-forecast a server",
    "decide": "record decisions or sign off a run",
    "admin": "do this",
}
PERMISSION_ROLE = {"whatif": "planner", "reforecast": "planner", "decide": "planner", "admin": "admin"}


@dataclass(frozen=True)
class User:
    """A signed-in user: ``id`` (the provider's ``sub``, or email when shown), display name, roles."""

    id: str
    name: str
    roles: frozenset[str]
    email: str | None = None

    @property
    def role(self) -> str | None:
        """The highest role held (what the navbar shows)."""
        held = [r for r in ROLES if r in self.roles]
        return held[-1] if held else None

    def can(self, permission: str) -> bool:
        return any(permission in ROLE_PERMISSIONS.get(r, frozenset()) for r in self.roles)

    def to_session(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "roles": sorted(self.roles), "email": self.email}

    @classmethod
    def from_session(cls, data: Any) -> User | None:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        roles = data.get("roles")
        if not isinstance(roles, list):
            return None
        return cls(
            id=data["id"],
            name=str(data.get("name") or data["id"]),
            roles=frozenset(r for r in roles if r in ROLE_PERMISSIONS),
            email=data.get("email") if isinstance(data.get("email"), str) else None,
        )


DEV_USER = User(id="dev-admin", name="dev-admin", roles=frozenset({"admin"}))
DEV_BANNER = "Development mode: no sign-in, you are dev-admin"


def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups in ``claims[claim]``: a list, or one string of comma/space-separated names."""
    raw = claims.get(claim)
    if isinstance(raw, str):
        return [p for p in re.split(r"[,\s]+", raw) if p]
    if isinstance(raw, list | tuple):
        return [str(p) for p in raw if isinstance(p, str | int) and str(p)]
    return []


def roles_for(groups: Iterable[str], role_groups: Mapping[str, list[str]]) -> frozenset[str]:
    """Roles granted by membership of any of the groups mapped to them."""
    have = set(groups)
    return frozenset(role for role, names in role_groups.items() if have.intersection(names))


def user_from_claims(claims: Mapping[str, Any], settings: Settings) -> User:
    """The user a verified token describes: id from ``sub``, roles from the groups claim."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError(401, "the token names no subject (sub)")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    name = next(
        (str(claims[k]) for k in ("name", "preferred_username", "email") if isinstance(claims.get(k), str)),
        sub,
    )
    roles = roles_for(groups_of(claims, settings.auth_groups_claim), settings.auth_role_groups)
    return User(id=sub, name=name[:100], roles=roles, email=email)


def current_user() -> User | None:
    """The user of the current request (None outside a request, or when nobody is signed in).

    In dev mode every request is dev-admin's, also in code that runs outside the gate (tests
    rendering a layout in a bare request context)."""
    if not has_request_context():
        return None
    user = g.get("capfc_user")
    if user is not None:
        return user
    settings = flask.current_app.extensions.get("capfc_auth_settings")
    if settings is not None and settings.auth_mode == "dev":
        return DEV_USER
    return None


def current_user_id() -> str | None:
    user = current_user()
    return user.id if user is not None else None


def user_key() -> str:
    """What per-user limits count under: the signed-in user's id; in dev mode (everyone is
    dev-admin) and for a request nobody signed (refused by the gate before any limit) the
    client's address, as the trusted proxy saw it."""
    settings = flask.current_app.extensions.get("capfc_auth_settings")
    uid = current_user_id()
    if uid is None or (settings is not None and settings.auth_mode == "dev"):
        return request.remote_addr or "unknown"
    return uid


class AuthError(Exception):
    """A request refused by sign-in: 401 (who are you?) or 403 (not allowed). ``reason`` goes
    to the log only; the client is told in general words."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------- ALB: x-amzn-oidc-data

ALB_DATA_HEADER = "x-amzn-oidc-data"
ALB_IDENTITY_HEADER = "x-amzn-oidc-identity"
ALB_ACCESS_TOKEN_HEADER = "x-amzn-oidc-accesstoken"
ALB_COOKIE_PREFIX = "AWSELBAuthSessionCookie"
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
MAX_TOKEN_CHARS = 16_384
KEY_MISS_SECONDS = 60.0  # an unknown kid is not fetched again for a minute
MAX_KEYS = 32


def b64url_decode(segment: str) -> bytes:
    """base64url with or without padding: the ALB pads its JWT segments (RFC 7515 says not to),
    so strict JWT libraries refuse them; the signature covers the segments exactly as sent."""
    if not B64URL_RE.match(segment):
        raise AuthError(401, "a token segment is not base64url")
    body = segment.rstrip("=")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise AuthError(401, "a token segment is not base64url") from None


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except (ValueError, UnicodeDecodeError):
        raise AuthError(401, f"the token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError(401, f"the token {what} is not a JSON object")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,12}", value):
        return float(value)
    return None


def alb_region(arn: str) -> str:
    """The region of an ALB ARN (arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/…)."""
    parts = arn.split(":")
    if (
        len(parts) < 6
        or parts[2] != "elasticloadbalancing"
        or not parts[3]
        or not parts[5].startswith("loadbalancer/app/")
    ):
        raise SettingsError(
            "CAPFC_AUTH_ALB_ARN (auth_alb_arn): not an Application Load Balancer ARN "
            "(arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>)"
        )
    return parts[3]


def _fetch_pem(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read(16_384)


class AlbVerifier:
    """Verifies the ``x-amzn-oidc-data`` JWT an ALB adds after signing a user in.

    Checked, in this order (nothing is fetched for a token that fails a cheap check): the
    algorithm is exactly ES256 (so ``none`` or HS256 keyed with the public key never pass), the
    ``signer`` header is our ALB's ARN, the ``kid`` is well formed; the signature verifies with
    the public key the ALB publishes for that ``kid`` (fetched once and kept; a miss is not
    fetched again for a minute); ``exp`` (header and payload) is not past, ``iss`` is the
    configured issuer, the ``client`` header is our client id when one is configured.
    """

    def __init__(
        self,
        arn: str,
        issuer: str,
        *,
        client_id: str | None = None,
        key_url: str = "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}",
        leeway: float = 30.0,
        fetch: Callable[[str], bytes] = _fetch_pem,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.arn = arn
        self.region = alb_region(arn)
        self.issuer = issuer
        self.client_id = client_id
        self.key_url = key_url
        self.leeway = leeway
        self.fetch = fetch
        self.clock = clock
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._misses: dict[str, float] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # how many keys were fetched (tests check the cache)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`AuthError` (401) saying why not (for the log)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthError(401, "empty or oversized token")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise AuthError(401, "not a signed JWT (three segments)")
        header = _json_segment(parts[0], "header")
        if header.get("alg") != "ES256":
            raise AuthError(401, f"algorithm {str(header.get('alg'))[:20]!r} refused (ES256 only)")
        signer = header.get("signer")
        if not isinstance(signer, str) or not hmac.compare_digest(signer.encode(), self.arn.encode()):
            raise AuthError(401, "signer is not this application's load balancer")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_RE.match(kid):
            raise AuthError(401, "missing or malformed kid")
        if self.client_id and header.get("client") not in (None, self.client_id):
            raise AuthError(401, "token issued for another client")
        signature = b64url_decode(parts[2])
        if len(signature) != 64:
            raise AuthError(401, "ES256 signature of the wrong length")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key = self.key(kid)
        try:
            key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise AuthError(401, "bad signature") from None
        claims = _json_segment(parts[1], "payload")
        now = self.clock()
        expiries = [_number(v) for v in (header.get("exp"), claims.get("exp")) if v is not None]
        if not expiries or any(e is None for e in expiries):
            raise AuthError(401, "no usable exp")
        if now > min(e for e in expiries if e is not None) + self.leeway:
            raise AuthError(401, "token expired")
        issuers = [v for v in (header.get("iss"), claims.get("iss")) if v is not None]
        if not issuers or any(i != self.issuer for i in issuers):
            raise AuthError(401, "token from another issuer")
        return claims

    def key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The ALB's P-256 public key ``kid``: cached; fetched from ``key_url`` when new."""
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            missed = self._misses.get(kid)
            if missed is not None and self.clock() - missed < KEY_MISS_SECONDS:
                raise AuthError(401, "unknown kid (recently not found)")
        url = self.key_url.format(region=self.region, kid=quote(kid, safe=""))
        try:
            pem = self.fetch(url)
            key = serialization.load_pem_public_key(pem)
        except (urllib.error.URLError, OSError, ValueError) as e:
            with self._lock:
                self._misses[kid] = self.clock()
                if len(self._misses) > 1000:
                    self._misses.clear()
            log.warning("ALB public key %s could not be fetched or read: %s", kid, type(e).__name__)
            raise AuthError(401, "unknown kid (no public key)") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise AuthError(401, "the published key is not a P-256 key")
        with self._lock:
            if len(self._keys) >= MAX_KEYS:
                self._keys.pop(next(iter(self._keys)))
            self._keys[kid] = key
            self.fetches += 1
        return key


# ---------------------------------------------------------------- OIDC in the app (Authlib)

LOGIN_PATH = "/auth/login"
CALLBACK_PATH = "/auth/callback"
LOGOUT_PATH = "/auth/logout"
SIGNED_OUT_PATH = "/auth/signed-out"
SESSION_USER = "capfc_user"
SESSION_NEXT = "capfc_next"
MIN_SECRET_CHARS = 32


def safe_next(target: Any) -> str:
    """A local path to return to after sign-in (never another site: no scheme, no //host)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 32 for c in target) or len(target) > 2000:
        return "/"
    return target


class OidcLogin:
    """Sign-in in the app: /auth/login → the provider → /auth/callback → the page asked for."""

    def __init__(self, server: flask.Flask, settings: Settings) -> None:
        from authlib.integrations.flask_client import OAuth

        self.settings = settings
        issuer = (settings.auth_issuer or "").rstrip("/")
        self.oauth = OAuth(server)
        secret = settings.auth_client_secret.get_secret_value() if settings.auth_client_secret else None
        self.client = self.oauth.register(
            "idp",
            client_id=settings.auth_client_id,
            client_secret=secret,
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs={
                "scope": settings.auth_scopes,
                "code_challenge_method": "S256",
                "default_timeout": 10,  # a provider that hangs must not hold a worker thread
            },
        )
        server.add_url_rule(LOGIN_PATH, "capfc_login", self.login)
        server.add_url_rule(CALLBACK_PATH, "capfc_callback", self.callback)

    def redirect_uri(self) -> str:
        return self.settings.auth_redirect_url or flask.url_for("capfc_callback", _external=True)

    def login(self) -> Any:
        session[SESSION_NEXT] = safe_next(request.args.get("next"))
        try:
            self._metadata()
            return self.client.authorize_redirect(self.redirect_uri())
        except AuthError as e:
            return _refusal(
                503, "Sign-in is unavailable", e.reason, "The identity provider could not be reached."
            )
        except Exception as e:  # the provider is down or its discovery document is unusable
            return _refusal(
                503, "Sign-in is unavailable", repr(e), "The identity provider could not be reached."
            )

    def _metadata(self) -> dict[str, Any]:
        metadata = self.client.load_server_metadata()
        if metadata.get("issuer", "").rstrip("/") != (self.settings.auth_issuer or "").rstrip("/"):
            raise AuthError(503, "the discovery document names another issuer")
        return metadata

    def callback(self) -> Any:
        if request.args.get("error"):
            reason = f"the provider answered error={request.args.get('error', '')[:60]!r}"
            return _refusal(401, "Sign-in failed", reason, "The identity provider did not sign you in.")
        try:
            self._metadata()
            token = self.client.authorize_access_token(leeway=self.settings.auth_leeway_seconds)
            claims = token.get("userinfo") if isinstance(token, dict) else None
            if not claims:
                raise AuthError(401, "no ID token in the token response")
            if claims.get("iss", "").rstrip("/") != (self.settings.auth_issuer or "").rstrip("/"):
                raise AuthError(401, "ID token from another issuer")
            user = user_from_claims(claims, self.settings)
        except AuthError as e:
            return _refusal(401, "Sign-in failed", e.reason, "Your sign-in could not be verified.")
        except Exception as e:  # bad state, expired/forged/misaddressed token, provider errors
            return _refusal(
                401, "Sign-in failed", f"{type(e).__name__}: {e}", "Your sign-in could not be verified."
            )
        target = safe_next(session.pop(SESSION_NEXT, "/"))
        session.clear()
        session.permanent = True
        session[SESSION_USER] = {**user.to_session(), "exp": time.time() + self.settings.session_hours * 3600}
        _bind_user(user)
        audit(
            "sign-in", f"signed in as {user.role or 'no role'}", roles=sorted(user.roles), user_name=user.name
        )
        return flask.redirect(target)

    def logout_url(self) -> str:
        """The provider's end-session URL (RP-initiated logout) when it has one, else our page."""
        back = flask.url_for("capfc_signed_out", _external=True)
        if self.settings.auth_logout_url:
            return self.settings.auth_logout_url
        try:
            end = self._metadata().get("end_session_endpoint")
        except Exception:
            end = None
        if not end:
            return back
        return self.client.create_logout_url(
            post_logout_redirect_uri=back, client_id=self.settings.auth_client_id
        )["url"]


def session_user(now: float | None = None) -> User | None:
    data = session.get(SESSION_USER)
    if not isinstance(data, dict):
        return None
    exp = _number(data.get("exp"))
    if exp is None or (now or time.time()) > exp:
        return None
    return User.from_session(data)


# ---------------------------------------------------------------- answers


def _page(status: int, title: str, body_html: str) -> Response:
    """A small self-contained HTML page (no scripts, no external resources)."""
    doc = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · Capacity Forecaster</title>"
        "<link rel='icon' href='data:,'></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body_html}</main></body></html>"
    )
    resp = Response(doc, status=status, content_type="text/html; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _plain(status: int, message: str) -> Response:
    resp = Response(message.rstrip() + "\n", status=status, content_type="text/plain; charset=utf-8")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _wants_page() -> bool:
    return request.method == "GET" and "text/html" in (request.headers.get("Accept") or "")


def _refusal(status: int, title: str, reason: str, told: str) -> Response:
    log.warning("%s: %s %s: %s", title.lower(), request.method, request.path, reason[:300])
    if request.path == CALLBACK_PATH:
        audit("sign-in-failed", f"sign-in failed: {reason[:200]}")
    if _wants_page():
        again = f"<p><a href='{LOGIN_PATH}'>Sign in again</a></p>" if status == 401 else ""
        return _page(status, title, f"<p>{html.escape(told)}</p>{again}")
    return _plain(status, f"{title}. {told}")


# ---------------------------------------------------------------- callbacks and permissions

DASH_UPDATE = "_dash-update-component"
# Callbacks that start planner work, by an id their outputs name.
PLANNER_OUTPUTS = {
    ids.WHATIF_STATE: "whatif",
    ids.SRV_REFORECAST: "reforecast",
    ids.DECIDE_SAVED: "decide",  # recording a decision (callbacks/decisions.py)
    ids.SIGNOFF_SAVED: "decide",  # signing a run off
}


def _output_ids(output: str) -> set[str]:
    """Component ids named by a callback output key ('a.b' or '..a.b...c.d..')."""
    found = set()
    for part in output.strip(".").split("..."):
        cid = part.rsplit(".", 1)[0]
        if cid:
            found.add(cid)
    return found


def _items(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _items(v)


def required_permission(body: Any) -> str | None:
    """The permission a callback request needs beyond reading, or None.

    A what-if (the scenario controls' callback, or any callback handed a scenario other than the
    plan's) needs ``whatif``; starting or polling a re-forecast needs ``reforecast``. Read from
    what the request names, not from what the page showed: a hand-made request is judged alike.
    """
    if not isinstance(body, dict):
        return None
    output = body.get("output")
    if isinstance(output, str):
        for cid in sorted(_output_ids(output)):
            if cid in PLANNER_OUTPUTS:
                return PLANNER_OUTPUTS[cid]
    from .whatif import ScenarioState

    for key in ("inputs", "state"):
        for item in _items(body.get(key)):
            scenario = item.get("id") == ids.WHATIF_STATE and item.get("property") == "data"
            if scenario and not ScenarioState.from_data(item.get("value")).is_base:
                return "whatif"
    return None


def forbidden_message(user: User, permission: str) -> str:
    words = PERMISSION_WORDS.get(permission, "do this")
    need = PERMISSION_ROLE.get(permission, "planner")
    return f"Your role ({user.role or 'none'}) cannot {words}: that needs the {need} role."


# ---------------------------------------------------------------- the gate


def check_config(settings: Settings) -> None:
    """Refuse to start on a sign-in configuration that cannot work (the message names the setting)."""
    mode = settings.auth_mode
    if mode is None:
        raise SettingsError(
            "CAPFC_AUTH_MODE is not set: choose alb (behind an ALB that signs users in), oidc "
            "(sign-in in the app) or dev (this machine only, no sign-in). The web app does not "
            "start without it."
        )
    missing = []
    if mode in ("alb", "oidc") and not settings.auth_issuer:
        missing.append("CAPFC_AUTH_ISSUER")
    if mode == "alb":
        if not settings.auth_alb_arn:
            missing.append("CAPFC_AUTH_ALB_ARN")
        else:
            alb_region(settings.auth_alb_arn)
    if mode == "oidc":
        if not settings.auth_client_id:
            missing.append("CAPFC_AUTH_CLIENT_ID")
        if not settings.auth_client_secret:
            missing.append("CAPFC_AUTH_CLIENT_SECRET")
        secret = settings.session_secret.get_secret_value() if settings.session_secret else ""
        if len(secret) < MIN_SECRET_CHARS:
            missing.append(f"CAPFC_SESSION_SECRET (at least {MIN_SECRET_CHARS} random characters)")
    if missing:
        raise SettingsError(f"CAPFC_AUTH_MODE={mode} needs " + ", ".join(missing))
    if mode in ("alb", "oidc"):
        issuer = urlsplit(settings.auth_issuer or "")
        if issuer.scheme not in ("https", "http") or not issuer.netloc:
            raise SettingsError("CAPFC_AUTH_ISSUER (auth_issuer): an https:// URL")


LOOPBACK = ("127.0.0.1", "::1", "localhost")
API_PREFIX = "/api/v1"


class Gate:
    """The before-request hook: every route but the probes and the sign-in pages needs a user."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.settings = settings
        self.mode = settings.auth_mode
        # sign-out (it only forgets: an expired session must still reach it) and, in oidc mode,
        # the sign-in routes; in the other modes those paths are not routes here and stay gated
        self.public = {LOGOUT_PATH, SIGNED_OUT_PATH}
        if self.mode == "oidc":
            self.public |= {LOGIN_PATH, CALLBACK_PATH}
        self.alb: AlbVerifier | None = None
        self.oidc: OidcLogin | None = None
        # the REST API's own sign-in (bearer tokens; app/api), set by app.api.install
        self.api: Callable[[], Response | None] | None = None
        if self.mode == "alb":
            self.alb = AlbVerifier(
                settings.auth_alb_arn or "",
                settings.auth_issuer or "",
                client_id=settings.auth_client_id,
                key_url=settings.auth_alb_key_url,
                leeway=settings.auth_leeway_seconds,
            )

    def authenticate(self) -> User | None:
        """The request's user, None when nobody is signed in; AuthError for a bad credential."""
        if self.mode == "dev":
            # the connection's own peer (before a trusted proxy's X-Forwarded-For is applied)
            peer = request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", request.remote_addr)
            if peer not in LOOPBACK:
                raise AuthError(403, f"development mode serves this machine only (client {peer})")
            return DEV_USER
        if self.mode == "alb":
            assert self.alb is not None
            token = request.headers.get(ALB_DATA_HEADER)
            if not token:
                return None
            claims = self.alb.verify(token)
            identity = request.headers.get(ALB_IDENTITY_HEADER)
            if identity and identity != claims.get("sub"):
                raise AuthError(401, "x-amzn-oidc-identity does not match the signed claims")
            return user_from_claims(claims, self.settings)
        return session_user()

    def __call__(self) -> Response | None:
        path = request.path
        if path in self.public:
            return None
        if self.api is not None and (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            return self.api()  # API clients sign in with bearer tokens, not the browser's session
        try:
            user = self.authenticate()
        except AuthError as e:
            if e.status == 403:
                return _refusal(403, "Not available", e.reason, "This address does not serve you.")
            return _refusal(401, "Sign-in required", e.reason, "Your sign-in could not be verified.")
        if user is None:
            if self.mode == "oidc" and _wants_page():
                full = request.full_path if request.query_string else path
                return flask.redirect(f"{LOGIN_PATH}?next={quote(safe_next(full), safe='')}")
            log.info("unauthenticated %s %s refused", request.method, path)
            if self.mode == "alb":
                told = "Reach this application through its load balancer, which signs you in."
            else:
                told = "Your session has ended or you are not signed in: reload the page to sign in."
            if _wants_page():
                return _page(401, "Sign-in required", f"<p>{html.escape(told)}</p>")
            return _plain(401, f"Sign-in required. {told}")
        if not user.roles:
            log.warning(
                "signed-in user %s has no role (groups claim %r)", user.id, self.settings.auth_groups_claim
            )
            told = (
                f"You are signed in as {user.name}, but your account has no role in Capacity Forecaster. "
                "Ask your administrator for the viewer or planner group."
            )
            signout = f"<p><a href='{LOGOUT_PATH}'>Sign out</a></p>"
            if _wants_page():
                return _page(403, "No access", f"<p>{html.escape(told)}</p>{signout}")
            return _plain(403, told)
        g.capfc_user = user
        _bind_user(user)
        if request.method == "POST" and path.endswith(DASH_UPDATE):
            body = request.get_json(silent=True, cache=True)
            need = required_permission(body)
            if need is not None and not user.can(need):
                audit("access-denied", forbidden_message(user, need), permission=need, role=user.role)
                return _plain(403, forbidden_message(user, need))
            if need is not None:
                _audit_planner_action(body, need, request.args)
        return None

    def logout(self) -> Response:
        """Forget the sign-in here, then at the provider (oidc) or the ALB's session cookies (alb)."""
        user = current_user() or (session_user() if self.mode == "oidc" else None)
        if user is not None:
            _bind_user(user)
            audit("sign-out", "signed out")
        if self.mode == "oidc" and self.oidc is not None:
            target = self.oidc.logout_url()
            session.clear()
            return flask.redirect(target)
        if self.mode == "alb":
            resp = flask.redirect(self.settings.auth_logout_url or SIGNED_OUT_PATH)
            # The ALB keeps the sign-in in up to 4 cookie shards; expiring them ends it here.
            for i in range(4):
                resp.delete_cookie(f"{ALB_COOKIE_PREFIX}-{i}", path="/", secure=True, httponly=True)
            return resp
        return flask.redirect(SIGNED_OUT_PATH)


def _bind_user(user: User) -> None:
    """Put the user on every log line and audit event of this request."""
    bind_context(user=user.id)


def _audit_planner_action(body: Any, permission: str, args: Mapping[str, str]) -> None:
    """One audit event per what-if change (a control moved) and per re-forecast started (not
    for the grids re-deriving the same scenario, nor for the browser polling a running job)."""
    if not isinstance(body, dict):
        return
    values = {
        f"{item.get('id')}.{item.get('property')}": item.get("value")
        for key in ("inputs", "state")
        for item in _items(body.get(key))
        if isinstance(item.get("id"), str)
    }
    changed = body.get("changedPropIds") or []
    output = body.get("output") if isinstance(body.get("output"), str) else ""
    if permission == "reforecast" and ids.SRV_REFORECAST in _output_ids(output) and not args.get("cacheKey"):
        server = values.get(f"{ids.SRV_ID}.data")
        model = values.get(f"{ids.SRV_MODEL}.value")
        audit(
            "re-forecast",
            f"re-forecast {str(server)[:80]} with {str(model)[:20]}",
            server_id=server,
            model=model,
        )
    elif permission == "whatif" and ids.WHATIF_STATE in _output_ids(output) and changed:
        scenario = {
            k.split(".")[0]: v for k, v in values.items() if k.startswith("whatif-") and v is not None
        }
        audit(
            "what-if",
            "what-if scenario changed",
            changed=[str(c)[:80] for c in changed[:10]],
            scenario=scenario,
        )


def signed_out_page() -> Response:
    return _page(
        200, "Signed out", f"<p>You are signed out.</p><p><a href='{LOGIN_PATH}?next=/'>Sign in</a></p>"
    )


def install(app: Any, settings: Settings) -> Gate:
    """Check the sign-in settings and put the gate in front of every route of ``app``'s server.

    Call after the request-log hooks (so refused requests are logged too) and before the
    security hooks (rate limits and job caps count per signed-in user)."""
    check_config(settings)
    server = app.server
    server.extensions["capfc_auth_settings"] = settings
    gate = Gate(app, settings)
    if settings.auth_mode == "oidc":
        assert settings.session_secret is not None
        server.secret_key = settings.session_secret.get_secret_value()
        server.config.update(
            SESSION_COOKIE_NAME="capfc_session",
            SESSION_COOKIE_SECURE=settings.session_cookie_secure,
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            PERMANENT_SESSION_LIFETIME=int(settings.session_hours * 3600),
        )
        gate.oidc = OidcLogin(server, settings)
        if not settings.session_cookie_secure:
            log.warning("CAPFC_SESSION_COOKIE_SECURE=false: the session cookie also travels over plain HTTP")
    server.add_url_rule(LOGOUT_PATH, "capfc_logout", gate.logout)
    server.add_url_rule(SIGNED_OUT_PATH, "capfc_signed_out", signed_out_page)
    server.before_request(gate)
    # rate limits and background-job caps count per signed-in user (app/security.py)
    from . import security

    security.set_user_id_function(user_key)
    log.info("sign-in mode: %s", settings.auth_mode)
    return gate
