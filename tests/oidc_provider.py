"""A small OpenID Connect identity provider on loopback, for the sign-in tests.

It speaks the parts of OIDC the app uses, over real HTTP: discovery
(``/.well-known/openid-configuration``), ``/jwks``, ``/authorize`` (signs in the configured test
user at once and redirects back with a code; checks client id, redirect URI and the PKCE
challenge), ``/token`` (client secret, code, redirect URI and PKCE verifier checked; answers an
RS256-signed ID token carrying the nonce), ``/logout`` (end-session). It also plays the AWS ALB:
``/alb-keys/<kid>`` serves P-256 public keys as PEM, as ``public-keys.auth.elb.<region>.amazonaws.com``
does, and :meth:`OidcProvider.alb_token` writes ``x-amzn-oidc-data`` headers as an ALB does
(ES256, padded base64url segments, ``signer``/``kid``/``iss``/``client``/``exp`` in the header).

For API clients it also answers the **client credentials** grant (``grant_type=client_credentials``
at ``/token``): machine clients registered in ``machine_clients`` (id -> secret and claims, e.g.
their groups) get an RS256 access token for ``API_AUDIENCE``; :meth:`OidcProvider.access_token`
writes the same tokens directly, bent on request (expired, another audience, another key).

Tests bend it to forge bad tokens: ``id_token_overrides`` (claims such as ``aud``, ``iss``,
``exp``, ``nonce``) and ``sign_with`` (another key) apply to the next ID tokens issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "capfc-test-client"
CLIENT_SECRET = "test-client-secret-0123456789"
ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/capfc/50dc6c495c0c9188"
API_AUDIENCE = "capfc-api"
MACHINE_ID = "capfc-reporting-job"
MACHINE_SECRET = "machine-secret-0123456789abcdef"
OTHER_ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/other/0123456789abcdef"


def b64url(data: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode("ascii")
    return text if pad else text.rstrip("=")


def _json_b64(value: dict[str, Any], *, pad: bool = False) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode(), pad=pad)


def sign_rs256(key: rsa.RSAPrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(sig)}"


def sign_es256(
    key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any], *, pad: bool = True
) -> str:
    """A JWS signed ES256 (raw r||s signature), segments padded as the ALB writes them."""
    signing_input = f"{_json_b64(header, pad=pad)}.{_json_b64(claims, pad=pad)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'), pad=pad)}"


def sign_hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{_json_b64(header)}.{_json_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    numbers = key.public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64url(n), "e": b64url(e)}


@dataclass
class _Grant:
    user: dict[str, Any]
    redirect_uri: str
    nonce: str | None
    challenge: str | None
    method: str | None
    issued: float = field(default_factory=time.time)


class OidcProvider:
    """The provider: start() on a free loopback port, stop() when done (a pytest fixture)."""

    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_kid = "test-rs-1"
        self.other_rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.alb_key = ec.generate_private_key(ec.SECP256R1())
        self.alb_kid = "3f0c2a9e-7b1d-4c55-9a8e-alb0000000001"
        self.other_alb_key = ec.generate_private_key(ec.SECP256R1())
        self.user: dict[str, Any] = {
            "sub": "u-1001",
            "name": "Pat Planner",
            "email": "pat@bank.example",
            "groups": ["capfc-planners", "staff"],
        }
        self.redirect_uris: set[str] = set()  # empty = any (registered by the test app)
        self.id_token_overrides: dict[str, Any] = {}
        self.sign_with: rsa.RSAPrivateKey | None = None
        self.codes: dict[str, _Grant] = {}
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests = 0
        self.key_requests = 0
        self.machine_clients: dict[str, dict[str, Any]] = {
            MACHINE_ID: {"secret": MACHINE_SECRET, "claims": {"groups": ["capfc-viewers"]}}
        }
        self.access_token_requests = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> OidcProvider:
        self._server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-idp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def alb_key_url(self) -> str:
        return self.url + "/alb-keys/{kid}"

    # ------------------------------------------------------------ tokens
    def id_token(self, grant: _Grant, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            **grant.user,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        claims.update(self.id_token_overrides)
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.sign_with or self.rsa_key
        return sign_rs256(key, {"alg": "RS256", "typ": "JWT", "kid": self.rsa_kid}, claims)

    def access_token(
        self,
        sub: str = MACHINE_ID,
        *,
        audience: str | list[str] | None = API_AUDIENCE,
        lifetime: int = 300,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """An RS256 access token as the client credentials grant issues it (or bent: ``lifetime``
        below 0 is expired, another ``audience``, ``key`` not the provider's = forged)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "client_id": sub,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return sign_rs256(
            key or self.rsa_key, {"alg": "RS256", "typ": "at+jwt", "kid": kid or self.rsa_kid}, body
        )

    def alb_token(
        self,
        user: dict[str, Any] | None = None,
        *,
        signer: str = ALB_ARN,
        kid: str | None = None,
        exp: float | None = None,
        iss: str | None = None,
        alg: str = "ES256",
        key: ec.EllipticCurvePrivateKey | None = None,
        pad: bool = True,
        client: str = CLIENT_ID,
    ) -> str:
        """An ``x-amzn-oidc-data`` value as the ALB writes it (or bent, for the refusal tests)."""
        exp = int(time.time()) + 120 if exp is None else int(exp)
        iss = self.issuer if iss is None else iss
        header = {
            "alg": alg,
            "kid": kid or self.alb_kid,
            "signer": signer,
            "iss": iss,
            "client": client,
            "exp": exp,
        }
        claims = {**(user or self.user), "exp": exp, "iss": iss}
        if alg == "none":
            return f"{_json_b64(header, pad=pad)}.{_json_b64(claims, pad=pad)}."
        if alg == "HS256":  # the classic confusion attack: HMAC keyed with the public key's PEM
            return sign_hs256(self.alb_public_pem(), header, claims)
        return sign_es256(key or self.alb_key, header, claims, pad=pad)

    def alb_public_pem(self, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        return (
            (key or self.alb_key)
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    # ------------------------------------------------------------ HTTP
    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/.well-known/openid-configuration":
            return self._json(
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": self.url + "/authorize",
                    "token_endpoint": self.url + "/token",
                    "jwks_uri": self.url + "/jwks",
                    "end_session_endpoint": self.url + "/logout",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "scopes_supported": ["openid", "profile", "email", "groups"],
                }
            )
        if path == "/jwks":
            return self._json({"keys": [_jwk(self.rsa_key.public_key(), self.rsa_kid)]})
        if path == "/authorize":
            return self._authorize(request)
        if path == "/session":
            return self._session(request)
        if path == "/token" and request.method == "POST":
            return self._token(request)
        if path == "/logout":
            target = request.args.get("post_logout_redirect_uri")
            if target:
                state = request.args.get("state")
                sep = "&" if "?" in target else "?"
                return Response(
                    status=302, headers={"Location": target + (f"{sep}state={state}" if state else "")}
                )
            return Response("signed out at the provider", mimetype="text/plain")
        if path.startswith("/alb-keys/"):
            self.key_requests += 1
            kid = path.rsplit("/", 1)[-1]
            if kid == self.alb_kid:
                return Response(self.alb_public_pem(), mimetype="application/x-pem-file")
            return Response("not found", status=404)
        return Response("not found", status=404)

    def _authorize(self, request: Request) -> Response:
        args = request.args.to_dict()
        self.authorize_requests.append(args)
        redirect_uri = args.get("redirect_uri", "")
        if args.get("client_id") != CLIENT_ID:
            return Response("unknown client", status=400)
        if self.redirect_uris and redirect_uri not in self.redirect_uris:
            return Response("redirect_uri not registered", status=400)
        if args.get("response_type") != "code" or "openid" not in args.get("scope", "").split():
            return Response("unsupported request", status=400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = _Grant(
            user=self._session_user(request) or dict(self.user),
            redirect_uri=redirect_uri,
            nonce=args.get("nonce"),
            challenge=args.get("code_challenge"),
            method=args.get("code_challenge_method"),
        )
        query = urlencode({"code": code, "state": args.get("state", "")})
        sep = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": f"{redirect_uri}{sep}{query}"})

    # The provider's own sign-in, as a corporate IdP keeps it in a cookie of its own: a load test
    # signs each simulated person in here first (GET /session?sub=…&name=…&groups=a,b), then the
    # app's code flow signs in that person. Without it, /authorize signs in ``self.user``.
    SESSION_COOKIE = "test_idp_session"

    def _session(self, request: Request) -> Response:
        args = request.args
        if not args.get("sub"):
            return Response("sub is required", status=400)
        account = {
            "sub": args["sub"],
            "name": args.get("name") or args["sub"],
            "groups": [g for g in args.get("groups", "").split(",") if g],
        }
        resp = Response("signed in at the provider", mimetype="text/plain")
        resp.set_cookie(self.SESSION_COOKIE, _json_b64(account), httponly=True, samesite="Lax")
        return resp

    def _session_user(self, request: Request) -> dict[str, Any] | None:
        raw = request.cookies.get(self.SESSION_COOKIE)
        if not raw:
            return None
        try:
            return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            return None

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = request.form
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            client_id, secret = auth.username, auth.password
        if form.get("grant_type") == "client_credentials":
            machine = self.machine_clients.get(client_id or "")
            if machine is None or not hmac.compare_digest(str(secret or ""), machine["secret"]):
                return self._json({"error": "invalid_client"}, 401)
            self.access_token_requests += 1
            lifetime = int(machine.get("lifetime", 300))  # a client registered for a long job may last longer
            token = self.access_token(
                client_id or "",
                audience=form.get("audience") or API_AUDIENCE,
                lifetime=lifetime,
                **machine["claims"],
            )
            return self._json({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return self._json({"error": "invalid_client"}, 401)
        if form.get("grant_type") != "authorization_code":
            return self._json({"error": "unsupported_grant_type"}, 400)
        grant = self.codes.pop(form.get("code", ""), None)  # a code is good once
        if grant is None or time.time() - grant.issued > 60:
            return self._json({"error": "invalid_grant"}, 400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._json({"error": "invalid_grant", "error_description": "redirect_uri"}, 400)
        if grant.challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = b64url(hashlib.sha256(verifier.encode()).digest())
            if grant.method != "S256" or not hmac.compare_digest(digest, grant.challenge):
                return self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        return self._json(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "openid profile email",
                "id_token": self.id_token(grant),
            }
        )

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> Response:
        resp = Response(json.dumps(body), status=status, mimetype="application/json")
        resp.headers["Cache-Control"] = "no-store"
        return resp
