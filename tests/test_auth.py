"""Sign-in and roles (app/auth.py) against a real OpenID Connect provider on loopback.

The app is served over real HTTP (werkzeug on 127.0.0.1) and driven with ``requests``, which
follows the redirects a browser would: app → /auth/login → the provider's /authorize → the
app's /auth/callback → the page. The provider (tests/oidc_provider.py) signs real RS256 ID
tokens and plays the ALB (ES256 ``x-amzn-oidc-data``, public keys by kid), and is bent to issue
expired, misaddressed, wrong-issuer, wrong-nonce and forged tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from app import auth, ids
from app.auth import AlbVerifier, AuthError, User, b64url_decode, required_permission
from forecasting.settings import Settings, SettingsError, load_settings
from tests.oidc_provider import ALB_ARN, CLIENT_ID, CLIENT_SECRET, OTHER_ALB_ARN, OidcProvider
from tests.test_observability import parse_lines

ROOT = Path(__file__).resolve().parents[1]
SESSION_SECRET = "test-session-secret-" + "x" * 40
HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json", "Content-Type": "application/json"}
VIEWER = {"sub": "u-2002", "name": "Val Viewer", "email": "val@bank.example", "groups": ["capfc-viewers"]}
PLANNER = {"sub": "u-1001", "name": "Pat Planner", "email": "pat@bank.example", "groups": ["capfc-planners"]}
NOBODY = {"sub": "u-3003", "name": "Nora Nobody", "groups": ["staff"]}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


class Served:
    """An app's Flask server on a free loopback port (threaded, like gunicorn's gthread workers)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app.server, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Served]]:
    started: list[Served] = []

    def start(app: Any) -> Served:
        s = Served(app)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def oidc_settings(root: Path, idp: OidcProvider, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data": str(root),
        "auth_mode": "oidc",
        "auth_issuer": idp.issuer,
        "auth_client_id": CLIENT_ID,
        "auth_client_secret": CLIENT_SECRET,
        "session_secret": SESSION_SECRET,
        "session_cookie_secure": False,  # plain HTTP on loopback; production keeps Secure
    }
    return Settings(**{**values, **extra})


def alb_settings(root: Path, idp: OidcProvider, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data": str(root),
        "auth_mode": "alb",
        "auth_issuer": idp.issuer,
        "auth_client_id": CLIENT_ID,
        "auth_alb_arn": ALB_ARN,
        "auth_alb_key_url": idp.alb_key_url,
    }
    return Settings(**{**values, **extra})


@pytest.fixture
def build(plan_store, plan_store_root, tmp_path) -> Callable[[Settings], Any]:
    from app import create_app

    def make(settings: Settings) -> Any:
        return create_app(settings, plan_store, cache_type="simple", cache_dir=str(tmp_path / "cache"))

    return make


@pytest.fixture
def oidc_site(build, plan_store_root, idp, serve) -> Served:
    site = serve(build(oidc_settings(plan_store_root, idp)))
    idp.redirect_uris = {site.url + auth.CALLBACK_PATH}
    return site


def sign_in(site: Served, idp: OidcProvider, user: dict[str, Any], path: str = "/") -> requests.Session:
    """The whole code flow with a real HTTP client: returns the signed-in session."""
    idp.user = dict(user)
    browser = requests.Session()
    resp = browser.get(site.url + path, headers=HTML, timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    assert urlsplit(resp.url).path == path.split("?")[0]
    return browser


# --------------------------------------------------------------------------- Dash callback requests


def end_id(browser: requests.Session, site: Served, path: str) -> str:
    import re

    page = browser.get(site.url + path, headers=HTML, timeout=30)
    match = re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>', page.text, re.S)
    assert match, page.text[:300]
    return json.loads(match.group(1))["end_id"]


def callback_body(app: Any, output_has: str, values: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    """A callback request as the renderer writes it, for the callback whose output names ``output_has``."""
    key = next(k for k in app.callback_map if output_has in k)
    spec = app.callback_map[key]

    def items(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"id": e["id"], "property": e["property"], "value": values.get(f"{e['id']}.{e['property']}")}
            for e in entries
        ]

    outputs = [
        {"id": part.rsplit(".", 1)[0], "property": part.rsplit(".", 1)[1]}
        for part in key.strip(".").split("...")
    ]
    return {
        "output": key,
        "outputs": outputs if key.startswith("..") else outputs[0],
        "inputs": items(spec["inputs"]),
        "state": items(spec.get("state", [])),
        "changedPropIds": changed,
    }


def post_callback(
    browser: requests.Session, site: Served, body: dict[str, Any], page: str
) -> requests.Response:
    eid = end_id(browser, site, page)
    return browser.post(
        site.url + "/_dash-update-component", params={"endId": eid}, json=body, headers=JSON, timeout=60
    )


SCENARIO = {"growth": 5.0, "thresholds": {"cpu_p95": 70.0}, "headroom": None, "policy": {}}


def whatif_body(app: Any) -> dict[str, Any]:
    return callback_body(
        app, f"{ids.WHATIF_STATE}.data", {f"{ids.WHATIF_GROWTH}.value": 5}, [f"{ids.WHATIF_GROWTH}.value"]
    )


def reforecast_body(app: Any) -> dict[str, Any]:
    return callback_body(
        app,
        f"{ids.SRV_REFORECAST}.data",
        {f"{ids.SRV_MODEL}.value": "naive", f"{ids.SRV_ID}.data": "srv-00001"},
        [f"{ids.SRV_MODEL}.value"],
    )


def risk_body(app: Any, scenario: dict[str, Any] | None) -> dict[str, Any]:
    return callback_body(
        app,
        f"{ids.RISK_GRID}.rowData",
        {f"{ids.FILTERS}.data": {}, f"{ids.WHATIF_STATE}.data": scenario},
        [f"{ids.WHATIF_STATE}.data"],
    )


# --------------------------------------------------------------------------- OIDC: the code flow


def test_oidc_code_flow_signs_in_and_returns_to_the_page(oidc_site, idp):
    browser = sign_in(oidc_site, idp, PLANNER, "/risk?business_unit=Retail")
    # the flow went through the provider with PKCE (S256) and a nonce, and came back to the page
    asked = idp.authorize_requests[-1]
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) >= 43
    assert asked["nonce"] and asked["state"] and asked["client_id"] == CLIENT_ID
    assert idp.token_requests == 1
    cookie = next(c for c in browser.cookies if c.name == "capfc_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "Lax"
    # the shell names the user and the role, with a sign-out link
    layout = browser.get(oidc_site.url + "/_dash-layout", headers=JSON, timeout=30)
    assert layout.status_code == 200
    text = layout.text
    assert "Pat Planner" in text and '"planner"' in text and ids.SIGN_OUT in text and "Sign out" in text
    assert auth.DEV_BANNER not in text
    # a planner's what-if runs
    resp = post_callback(browser, oidc_site, whatif_body(oidc_site.app), "/risk")
    assert resp.status_code == 200, resp.text[:300]


def test_oidc_sign_out_ends_the_session_here_and_at_the_provider(oidc_site, idp):
    browser = sign_in(oidc_site, idp, PLANNER)
    out = browser.get(oidc_site.url + auth.LOGOUT_PATH, headers=HTML, timeout=30)
    assert out.status_code == 200 and "signed out" in out.text.lower()
    assert any(urlsplit(r.headers["Location"]).path == "/logout" for r in out.history)  # the provider's
    again = browser.get(oidc_site.url + "/", headers=HTML, allow_redirects=False, timeout=30)
    assert again.status_code == 302 and again.headers["Location"].startswith(auth.LOGIN_PATH)


def test_session_cookie_is_secure_httponly_lax_in_production(build, plan_store_root, idp):
    settings = oidc_settings(plan_store_root, idp).model_copy(update={"session_cookie_secure": True})
    client = build(settings).server.test_client()
    resp = client.get(auth.LOGIN_PATH + "?next=/risk")
    assert resp.status_code == 302 and resp.headers["Location"].startswith(idp.url + "/authorize")
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


BAD_ID_TOKENS = {
    "expired": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
    "wrong audience": {"aud": "someone-else"},
    "wrong issuer": {"iss": "http://127.0.0.1:1/evil"},
    "bad nonce": {"nonce": "not-the-nonce-we-sent"},
}


@pytest.mark.parametrize("case", [*BAD_ID_TOKENS, "forged (another key)"])
def test_oidc_refuses_bad_id_tokens(oidc_site, idp, case):
    if case in BAD_ID_TOKENS:
        idp.id_token_overrides = dict(BAD_ID_TOKENS[case])
    else:
        idp.sign_with = idp.other_rsa_key
    idp.user = dict(PLANNER)
    browser = requests.Session()
    resp = browser.get(oidc_site.url + "/", headers=HTML, timeout=30)
    assert idp.token_requests == 1  # the code was exchanged: the ID token itself was refused
    assert resp.status_code == 401 and urlsplit(resp.url).path == auth.CALLBACK_PATH
    assert "Sign-in failed" in resp.text and "Pat Planner" not in resp.text
    # not signed in afterwards
    again = browser.get(oidc_site.url + "/", headers=HTML, allow_redirects=False, timeout=30)
    assert again.status_code == 302 and again.headers["Location"].startswith(auth.LOGIN_PATH)


def test_a_callback_without_the_login_state_is_refused(oidc_site, idp):
    """A code replayed in another browser (no state/nonce in its session) signs nobody in."""
    idp.user = dict(PLANNER)
    first = requests.Session()
    to_idp = first.get(oidc_site.url + auth.LOGIN_PATH, allow_redirects=False, timeout=30)
    at_idp = first.get(to_idp.headers["Location"], allow_redirects=False, timeout=30)
    callback = at_idp.headers["Location"]
    attacker = requests.Session()
    resp = attacker.get(callback, headers=HTML, timeout=30)
    assert resp.status_code == 401


def test_next_after_sign_in_stays_on_this_site():
    assert auth.safe_next("/risk?x=1") == "/risk?x=1"
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "risk", None, "/\x00"):
        assert auth.safe_next(bad) == "/"


def test_a_user_without_a_role_is_told_so(oidc_site, idp):
    browser = requests.Session()
    idp.user = dict(NOBODY)
    resp = browser.get(oidc_site.url + "/", headers=HTML, timeout=30)
    assert resp.status_code == 403 and "no role" in resp.text and "Nora Nobody" in resp.text
    xhr = browser.get(oidc_site.url + "/_dash-layout", headers=JSON, timeout=30)
    assert xhr.status_code == 403


# --------------------------------------------------------------------------- what needs a user


def test_only_the_probes_are_public(oidc_site):
    anon = requests.Session()
    for path in ("/healthz", "/readyz"):
        assert anon.get(oidc_site.url + path, timeout=30).status_code == 200, path
    page = anon.get(
        oidc_site.url + "/risk?business_unit=Retail", headers=HTML, allow_redirects=False, timeout=30
    )
    assert page.status_code == 302
    login = urlsplit(page.headers["Location"])
    assert login.path == auth.LOGIN_PATH and parse_qs(login.query)["next"] == ["/risk?business_unit=Retail"]
    for path in (
        "/_dash-layout",
        "/_dash-dependencies",
        "/assets/10-app.css",
        "/_dash-component-suites/dash/deps/polyfill@7.v4_4_1m1.12.1.min.js",
        "/no/such/page",
    ):
        resp = anon.get(oidc_site.url + path, headers=JSON, allow_redirects=False, timeout=30)
        assert resp.status_code == 401, path
        assert "Sign-in required" in resp.text
    body = risk_body(oidc_site.app, None)
    resp = anon.post(oidc_site.url + "/_dash-update-component", json=body, headers=JSON, timeout=30)
    assert resp.status_code == 401 and "Sign-in required" in resp.text


def test_an_expired_session_is_signed_out(build, plan_store_root, idp, serve):
    site = serve(build(oidc_settings(plan_store_root, idp, session_hours=0.0003)))  # ~1 s
    browser = sign_in(site, idp, PLANNER)
    time.sleep(1.5)
    resp = browser.get(site.url + "/_dash-layout", headers=JSON, timeout=30)
    assert resp.status_code == 401


# --------------------------------------------------------------------------- roles


def test_viewer_reads_and_exports_but_cannot_run_what_ifs_or_reforecasts(oidc_site, idp):
    app = oidc_site.app
    viewer = sign_in(oidc_site, idp, VIEWER, "/risk?growth=5")
    layout = viewer.get(oidc_site.url + "/_dash-layout", headers=JSON, timeout=30).text
    assert "Val Viewer" in layout and '"viewer"' in layout
    # the page hides the controls and says why; the shared scenario is not applied
    page = post_callback(
        viewer,
        oidc_site,
        callback_body(
            app,
            "_pages_content.children",
            {"_pages_location.pathname": "/risk", "_pages_location.search": "?growth=5"},
            ["_pages_location.pathname"],
        ),
        "/risk",
    )
    assert page.status_code == 200
    assert ids.WHATIF_DENIED in page.text and "carries a what-if" in page.text
    assert ids.WHATIF_GROWTH not in page.text
    # reading the plan is fine; any what-if or re-forecast request is refused on the server
    assert post_callback(viewer, oidc_site, risk_body(app, None), "/risk").status_code == 200
    for body, page_path, words in (
        (whatif_body(app), "/risk", "run what-ifs"),
        (risk_body(app, SCENARIO), "/risk", "run what-ifs"),
        (reforecast_body(app), "/servers/srv-00001", "re-forecast"),
    ):
        resp = post_callback(viewer, oidc_site, body, page_path)
        assert resp.status_code == 403, body["output"]
        assert f"Your role (viewer) cannot {words}" in resp.text and "planner role" in resp.text
    # an export (a callback with the plan's scenario) is a viewer's right
    export = callback_body(
        app,
        f"{ids.RISK_DOWNLOAD}.data",
        {f"{ids.RISK_EXPORT_CSV}.n_clicks": 1, f"{ids.FILTERS}.data": {}, f"{ids.WHATIF_STATE}.data": None},
        [f"{ids.RISK_EXPORT_CSV}.n_clicks"],
    )
    resp = post_callback(viewer, oidc_site, export, "/risk")
    assert resp.status_code in (200, 204), resp.text[:300]


def test_planner_sees_the_controls_and_may_reforecast(oidc_site, idp):
    app = oidc_site.app
    planner = sign_in(oidc_site, idp, PLANNER, "/servers/srv-00001")
    page = post_callback(
        planner,
        oidc_site,
        callback_body(
            app,
            "_pages_content.children",
            {"_pages_location.pathname": "/servers/srv-00001", "_pages_location.search": ""},
            ["_pages_location.pathname"],
        ),
        "/servers/srv-00001",
    )
    assert ids.SRV_MODEL in page.text and ids.SRV_MODEL_DENIED not in page.text
    assert required_permission(reforecast_body(app)) == "reforecast"
    assert User("p", "p", frozenset({"planner"})).can("reforecast")


def test_required_permission_reads_the_request_not_the_page(fixture_app):
    app = fixture_app
    assert required_permission(whatif_body(app)) == "whatif"
    assert required_permission(reforecast_body(app)) == "reforecast"
    assert required_permission(risk_body(app, SCENARIO)) == "whatif"
    assert required_permission(risk_body(app, None)) is None
    assert required_permission(risk_body(app, {"growth": 0, "thresholds": {}})) is None
    assert required_permission({"output": 3}) is None and required_permission([]) is None
    viewer = User("v", "v", frozenset({"viewer"}))
    assert viewer.can("export") and not viewer.can("whatif") and not viewer.can("reforecast")
    assert User("a", "a", frozenset({"admin"})).can("admin")


def test_roles_come_from_the_groups_claim_through_the_mapping(plan_store_root):
    settings = Settings(
        data=str(plan_store_root),
        auth_groups_claim="cognito:groups",
        auth_role_groups={"viewer": ["Readers"], "planner": ["Capacity Planners"]},
    )
    user = auth.user_from_claims({"sub": "x", "cognito:groups": ["Readers", "Capacity Planners"]}, settings)
    assert user.roles == {"viewer", "planner"} and user.role == "planner"
    assert auth.user_from_claims({"sub": "y", "cognito:groups": "Readers"}, settings).role == "viewer"
    assert not auth.user_from_claims({"sub": "z", "groups": ["Readers"]}, settings).roles
    with pytest.raises(SettingsError, match="unknown role"):
        load_settings(auth_role_groups={"superuser": ["x"]})


# --------------------------------------------------------------------------- ALB mode


@pytest.fixture
def alb_site(build, plan_store_root, idp, serve) -> Served:
    return serve(build(alb_settings(plan_store_root, idp)))


def alb_get(
    site: Served, token: str | None, path: str = "/_dash-layout", **headers: str
) -> requests.Response:
    h = dict(JSON)
    if token is not None:
        h[auth.ALB_DATA_HEADER] = token
    h.update(headers)
    return requests.get(site.url + path, headers=h, allow_redirects=False, timeout=30)


def test_alb_signed_header_signs_the_user_in_and_keys_are_cached(alb_site, idp):
    for _ in range(3):
        resp = alb_get(alb_site, idp.alb_token(PLANNER), **{auth.ALB_IDENTITY_HEADER: PLANNER["sub"]})
        assert resp.status_code == 200 and "Pat Planner" in resp.text and '"planner"' in resp.text
    assert idp.key_requests == 1  # fetched once by kid, then cached
    # without the ALB's padding too (should AWS ever drop it)
    assert alb_get(alb_site, idp.alb_token(VIEWER, pad=False)).status_code == 200
    page = alb_get(alb_site, idp.alb_token(PLANNER), "/", Accept="text/html")
    assert page.status_code == 200 and "_dash-renderer" in page.text
    assert alb_get(alb_site, None, "/healthz").status_code == 200


def test_alb_refuses_missing_forged_expired_misdirected_and_algorithm_tricks(alb_site, idp):
    cases = {
        "no header": None,
        "forged (another key)": idp.alb_token(PLANNER, key=idp.other_alb_key),
        "expired": idp.alb_token(PLANNER, exp=time.time() - 600),
        "wrong signer": idp.alb_token(PLANNER, signer=OTHER_ALB_ARN),
        "alg none": idp.alb_token(PLANNER, alg="none"),
        "HS256 keyed with the public key": idp.alb_token(PLANNER, alg="HS256"),
        "wrong issuer": idp.alb_token(PLANNER, iss="https://evil.example"),
        "unknown kid": idp.alb_token(PLANNER, kid="00000000-0000-0000-0000-000000000000"),
        "garbage": "not.a.jwt",
        "tampered payload": _tamper(idp.alb_token(VIEWER)),
    }
    for case, token in cases.items():
        resp = alb_get(alb_site, token)
        assert resp.status_code == 401, case
        assert "Pat Planner" not in resp.text and "Sign-in required" in resp.text, case
    page = alb_get(alb_site, None, "/risk", Accept="text/html")
    assert page.status_code == 401 and "load balancer" in page.text
    for path in (auth.LOGIN_PATH, auth.CALLBACK_PATH):  # not routes in alb mode: gated like any page
        assert alb_get(alb_site, None, path, Accept="text/html").status_code == 401, path
    mismatch = alb_get(alb_site, idp.alb_token(PLANNER), **{auth.ALB_IDENTITY_HEADER: "someone-else"})
    assert mismatch.status_code == 401
    fetched = idp.key_requests
    assert (
        alb_get(alb_site, idp.alb_token(PLANNER, kid="00000000-0000-0000-0000-000000000000")).status_code
        == 401
    )
    assert idp.key_requests == fetched  # an unknown kid is not fetched again at once


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["groups"] = ["capfc-admins"]
    from tests.oidc_provider import _json_b64

    return f"{header}.{_json_b64(claims, pad=True)}.{sig}"


def test_alb_role_enforcement_and_sign_out(alb_site, idp):
    app = alb_site.app
    token = idp.alb_token(VIEWER)
    body = whatif_body(app)
    page = requests.get(alb_site.url + "/risk", headers={**HTML, auth.ALB_DATA_HEADER: token}, timeout=30)
    import re

    eid = json.loads(
        re.search(r'id="_dash-config" type="application/json">(.*?)</script>', page.text, re.S)[1]
    )
    resp = requests.post(
        alb_site.url + "/_dash-update-component",
        params={"endId": eid["end_id"]},
        json=body,
        headers={**JSON, auth.ALB_DATA_HEADER: token},
        timeout=30,
    )
    assert resp.status_code == 403 and "viewer" in resp.text
    out = alb_get(alb_site, token, auth.LOGOUT_PATH)
    assert out.status_code == 302
    expired = [c for c in out.raw.headers.getlist("Set-Cookie") if c.startswith(auth.ALB_COOKIE_PREFIX)]
    assert len(expired) == 4 and all("Expires=Thu, 01 Jan 1970" in c for c in expired)


def test_alb_verifier_checks_without_fetching_for_cheap_failures(idp):
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return idp.alb_public_pem()

    verifier = AlbVerifier(
        ALB_ARN, idp.issuer, client_id=CLIENT_ID, key_url="https://keys.test/{region}/{kid}", fetch=fetch
    )
    assert verifier.region == "eu-west-1"
    for token in (
        idp.alb_token(alg="none"),
        idp.alb_token(signer=OTHER_ALB_ARN),
        idp.alb_token(kid="../../x"),
    ):
        with pytest.raises(AuthError):
            verifier.verify(token)
    assert fetched == []
    claims = verifier.verify(idp.alb_token(PLANNER))
    assert claims["sub"] == PLANNER["sub"] and fetched == [f"https://keys.test/eu-west-1/{idp.alb_kid}"]
    with pytest.raises(AuthError, match="another client"):
        verifier.verify(idp.alb_token(PLANNER, client="other-client"))


def test_b64url_tolerates_the_albs_padding():
    assert b64url_decode("YQ==") == b"a" == b64url_decode("YQ")
    with pytest.raises(AuthError):
        b64url_decode("Y+Q=")


# --------------------------------------------------------------------------- configuration and dev mode


def test_misconfigured_sign_in_refuses_to_start(plan_store_root, idp):
    with pytest.raises(SettingsError, match="CAPFC_AUTH_MODE is not set"):
        auth.check_config(Settings(data=str(plan_store_root), auth_mode=None))
    with pytest.raises(SettingsError, match="CAPFC_SESSION_SECRET"):
        auth.check_config(oidc_settings(plan_store_root, idp, session_secret="short"))
    with pytest.raises(SettingsError, match="CAPFC_AUTH_ALB_ARN"):
        auth.check_config(Settings(data=str(plan_store_root), auth_mode="alb", auth_issuer=idp.issuer))
    with pytest.raises(SettingsError, match="not an Application Load Balancer ARN"):
        auth.check_config(alb_settings(plan_store_root, idp, auth_alb_arn="arn:aws:s3:::bucket"))


@pytest.mark.slow
def test_the_web_app_does_not_start_without_a_sign_in_mode(plan_store_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    env.update(CAPFC_DATA=str(plan_store_root), TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", "import app.wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "CAPFC_AUTH_MODE is not set" in proc.stderr


def test_dev_mode_banner_and_this_machine_only(fixture_app):
    client = fixture_app.server.test_client()
    layout = client.get("/_dash-layout")
    assert layout.status_code == 200
    assert auth.DEV_BANNER in layout.text and "dev-admin" in layout.text
    remote = fixture_app.server.test_client()
    resp = remote.get("/_dash-layout", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 403
    assert remote.get("/healthz", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


# --------------------------------------------------------------------------- the user in logs and audit events


@pytest.fixture
def json_lines() -> Iterator[None]:
    """JSON logs (forecasting.observability) for one test, then the root logger as it was."""
    import logging

    from forecasting import observability as obs

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    obs.configure_logging("INFO", "capfc-test", "json")
    yield
    obs.flush_metrics()
    obs.clear_context()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    obs._state.fmt, obs._state.logger = "json", None
    logging.captureWarnings(False)


def test_every_request_line_and_audit_event_carries_the_signed_in_user(
    json_lines, capsys, build, plan_store_root, idp
):
    from forecasting import observability as obs

    app = build(alb_settings(plan_store_root, idp))
    client = app.server.test_client()
    planner = {auth.ALB_DATA_HEADER: idp.alb_token(PLANNER)}
    viewer = {auth.ALB_DATA_HEADER: idp.alb_token(VIEWER)}
    capsys.readouterr()
    assert client.get("/_dash-layout", headers=planner).status_code == 200
    assert client.post("/_dash-update-component", json=whatif_body(app), headers=viewer).status_code == 403
    assert client.post("/_dash-update-component", json=whatif_body(app), headers=planner).status_code == 200
    assert client.get("/_dash-layout").status_code == 401
    obs.flush_metrics()
    records = [r for r in parse_lines(capsys.readouterr().out) if "_aws" not in r]
    access = [r for r in records if r.get("name") == "app.access"]
    assert [(r["status"], r.get("user")) for r in access] == [
        (200, PLANNER["sub"]),
        (403, VIEWER["sub"]),
        (200, PLANNER["sub"]),
        (401, None),
    ]
    events = {r["event"]: r for r in records if r.get("audit")}
    assert (
        events["access-denied"]["user"] == VIEWER["sub"] and events["access-denied"]["permission"] == "whatif"
    )
    assert events["what-if"]["user"] == PLANNER["sub"]
    assert events["what-if"]["scenario"][ids.WHATIF_GROWTH] == 5


def test_rate_limits_count_per_signed_in_user(build, plan_store_root, idp):
    """Two users behind one address (one ALB): each has their own budget of exports."""
    app = build(alb_settings(plan_store_root, idp, rate_limit="2/minute"))
    client = app.server.test_client()
    export = callback_body(
        app,
        f"{ids.RISK_DOWNLOAD}.data",
        {f"{ids.RISK_EXPORT_CSV}.n_clicks": 1, f"{ids.FILTERS}.data": {}, f"{ids.WHATIF_STATE}.data": None},
        [f"{ids.RISK_EXPORT_CSV}.n_clicks"],
    )
    viewer = {auth.ALB_DATA_HEADER: idp.alb_token(VIEWER)}
    planner = {auth.ALB_DATA_HEADER: idp.alb_token(PLANNER)}
    codes = [
        client.post("/_dash-update-component", json=export, headers=viewer).status_code for _ in range(3)
    ]
    assert codes[:2] != [429, 429] and codes[2] == 429, codes
    assert client.post("/_dash-update-component", json=export, headers=planner).status_code != 429


def test_audit_fields_named_like_log_record_attributes_do_not_break_the_request(json_lines, capsys):
    """Found by the signed-in load test: ``audit(..., name=...)`` raised KeyError inside logging
    (a 500 on every sign-in) whenever INFO was on, as under gunicorn."""
    from forecasting.observability import audit

    capsys.readouterr()
    audit("sign-in", "signed in as planner", name="Pat Planner", msg="x", user_name="Pat Planner")
    (record,) = [r for r in parse_lines(capsys.readouterr().out) if r.get("audit")]
    assert (record["field_name"], record["field_msg"], record["user_name"]) == (
        "Pat Planner",
        "x",
        "Pat Planner",
    )
