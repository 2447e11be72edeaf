"""The bad-input corpus: every kind of hostile or broken input, in one table, each with the exact
message it must give — never a traceback, an internal path or a 500.

Kinds: sample and inventory files (through the real CLI, in process; the files are in
``tests/data/bad_inputs/``), URLs and ids, sign-in tokens (ALB ``x-amzn-oidc-data`` headers made
by the test identity provider, tests/oidc_provider.py), filter strings, export requests and
malformed callback requests (Flask's test client on fully built apps). A CLI case that is
refused (exit 2) must have written nothing; one whose rows were partly rejected (exit 3) must
have written the valid rows. A web case must log nothing at ERROR.

Then a hypothesis fuzz run over the ingest validators (any table: a report or a one-line
refusal, never another exception) and the request handlers (any JSON body, any path, any
filter string: a 2xx/4xx with a plain message, never a 500).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import auth, ids
from tests.oidc_provider import ALB_ARN, CLIENT_ID, OTHER_ALB_ARN, OidcProvider, _json_b64
from tests.test_security import app_errors, body_for, export_body, post

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "data" / "bad_inputs"
NAB = ROOT / "tests" / "data" / "nab" / "realAWSCloudwatch" / "ec2_cpu_utilization_24ae8d.csv"
PLANNER = {"sub": "u-1001", "name": "Pat Planner", "groups": ["capfc-planners"]}
VIEWER = {"sub": "u-2002", "name": "Val Viewer", "groups": ["capfc-viewers"]}
UNKNOWN_KID = "00000000-0000-0000-0000-000000000000"
NOT_VERIFIED = "Sign-in required. Your sign-in could not be verified."
NO_HEADER = "Sign-in required. Reach this application through its load balancer, which signs you in."
# the NAB sample's two half-covered hours, reported on every ingest of it
PARTIAL = (
    "\n[samples] partial_period: 2 flagged — hourly periods with 50%–90% of the expected samples, kept "
    "(e.g. ec2-24ae8d cpu_p95 2014-02-14 14:00 (50%), ec2-24ae8d cpu_p95 2014-02-28 14:00 (50%))"
)
INTERNAL = ("Traceback", 'File "', "site-packages", "Exception", "Error:")


# --------------------------------------------------------------------------- the harness


class Ctx:
    """What a case may use; each piece is built on first use, once per test."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp = tmp_path
        self.data = tmp_path / "store"
        self._client: Any = None

    # ---- the CLI
    def cli(self, *argv: str, data: str | None = None) -> tuple[int, str]:
        """Run ``python -m forecasting`` in process: (exit code, the line(s) the person reads)."""
        from forecasting.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--data", data or str(self.data), *argv])
        said = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
        said += [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("[")]
        for text in (err.getvalue(), out.getvalue()):
            assert "Traceback" not in text and "unexpected" not in text, text[-2000:]
        return code, "\n".join(said)

    def ingest(self, *argv: str) -> tuple[int, str]:
        code, said = self.cli("ingest", *argv, "--freq", "hourly")
        written = {p.name for p in self.data.iterdir()} if self.data.exists() else set()
        if code == 2:  # refused: nothing written (a lock file and the released lease at most)
            assert written <= {".capfc.lock", ".ingest-lease"}, written
        if code == 3:  # partly rejected: the valid rows were written
            assert {"metrics", "inventory", "store.json"} <= written, written
        return code, said

    # ---- the web app (dev mode)
    @property
    def app(self) -> Any:
        return self.request.getfixturevalue("fixture_app")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.app.server.test_client()
            assert self._client.get("/").status_code == 200
        return self._client

    def callback(self, body: Any, **kw: Any) -> tuple[int, str]:
        r = post(self.client, body, **kw)
        return r.status_code, r.get_data(as_text=True).strip()

    def component_text(self, body: dict, component: str, prop: str = "children") -> tuple[int, str]:
        """A callback's answer as the user reads it: the text of one output component."""
        r = post(self.client, body)
        assert r.status_code == 200, r.get_data(as_text=True)
        return 200, _text(r.get_json()["response"][component][prop])

    def get(self, path: str) -> tuple[int, str]:
        r = self.client.get(path)
        return r.status_code, r.get_data(as_text=True).strip()

    # ---- ALB mode, against the test identity provider
    @property
    def idp(self) -> OidcProvider:
        return self.request.getfixturevalue("alb_idp")

    def alb(self, token: str | None, path: str = "/_dash-layout", **headers: str) -> tuple[int, str]:
        client = self.request.getfixturevalue("alb_app").server.test_client()
        h = {"Accept": "application/json", **headers}
        if token is not None:
            h[auth.ALB_DATA_HEADER] = token
        r = client.get(path, headers=h)
        return r.status_code, r.get_data(as_text=True).strip()

    def alb_callback(self, token: str, body: dict) -> tuple[int, str]:
        client = self.request.getfixturevalue("alb_app").server.test_client()
        r = client.post(
            "/_dash-update-component",
            data=json.dumps(body),
            content_type="application/json",
            headers={auth.ALB_DATA_HEADER: token},
        )
        return r.status_code, r.get_data(as_text=True).strip()


def _text(node: Any) -> str:
    """The visible text of a Dash component tree as JSON (props.children, depth first)."""
    if node is None:
        return ""
    if isinstance(node, str | int | float):
        return str(node)
    if isinstance(node, list):
        return "".join(_text(n) for n in node)
    if isinstance(node, dict):
        return _text(node.get("props", {}).get("children"))
    return ""


@dataclass(frozen=True)
class Case:
    kind: str  # file | inventory | url | token | filter | export | request
    name: str
    run: Callable[[Ctx], tuple[int, str]]
    status: int  # exit code (CLI) or HTTP status
    message: str  # exact; "{bad}" stands for tests/data/bad_inputs, "{nab}" for the NAB sample


def _file(name: str, message: str, status: int = 2) -> Case:
    return Case("file", name, lambda c: c.ingest(str(BAD / name)), status, message)


def _inventory(name: str, message: str, status: int = 2) -> Case:
    return Case(
        "inventory", name, lambda c: c.ingest(str(NAB), "--inventory", str(BAD / name)), status, message
    )


def _token(
    name: str, make: Callable[[OidcProvider], str | None], message: str = NOT_VERIFIED, **h: str
) -> Case:
    return Case("token", name, lambda c: c.alb(make(c.idp), **h), 401, message)


def _bad_request(
    name: str, body: Any, message: str, status: int = 400, ctype: str = "application/json"
) -> Case:
    def run(c: Ctx) -> tuple[int, str]:
        return c.callback(body(c.app) if callable(body) else body, content_type=ctype)

    return Case("request", name, run, status, message)


def _server_page(name: str, server_id: Any, message: str) -> Case:
    def run(c: Ctx) -> tuple[int, str]:
        body = body_for(c.app, "srv-message.children", {f"{ids.SRV_ID}.data": server_id})
        return c.component_text(body, ids.SRV_MESSAGE)

    return Case("url", name, run, 200, message)


def _filter_link(name: str, search: str, message: str) -> Case:
    def run(c: Ctx) -> tuple[int, str]:
        body = body_for(c.app, "shell-filters.data", {f"{ids.URL}.search": search}, [f"{ids.URL}.search"])
        return c.component_text(body, ids.FILTER_NOTICE)

    return Case("filter", name, run, 200, message)


def _export(name: str, values: dict[str, Any], message: str) -> Case:
    """A CSV export of the risk grid with a hostile view: ``message`` is the export's line
    describing the grid view (the hostile text quoted and neutralised, never a formula)."""

    def run(c: Ctx) -> tuple[int, str]:
        body = body_for(
            c.app,
            "risk-download.data",
            {f"{ids.RISK_EXPORT_CSV}.n_clicks": 1, f"{ids.FILTERS}.data": {}, **values},
            [f"{ids.RISK_EXPORT_CSV}.n_clicks"],
        )
        r = post(c.client, body)
        assert r.status_code == 200, r.get_data(as_text=True)
        import base64

        data = r.get_json()["response"][ids.RISK_DOWNLOAD]["data"]
        text = base64.b64decode(data["content"]).decode("utf-8-sig")
        lines = text.splitlines()
        assert all(not line.startswith(("=", "+", "-", "@")) for line in lines)
        return 200, next(line for line in lines if line.startswith("# Grid view"))

    return Case("export", name, run, 200, message)


def _viewer_export_with_scenario(c: Ctx) -> tuple[int, str]:
    body = export_body(c.request.getfixturevalue("alb_app"))
    body["state"] = [
        {**s, "value": {"growth": 5.0}} if s["id"] == ids.WHATIF_STATE else s for s in body["state"]
    ]
    return c.alb_callback(c.idp.alb_token(VIEWER), body)


def _export_over_the_rate_limit(c: Ctx) -> tuple[int, str]:
    make_app, store, root = (
        c.request.getfixturevalue(n) for n in ("make_app", "plan_store", "plan_store_root")
    )
    app = make_app(store, root, rate_limit="1/minute")
    client = app.server.test_client()
    client.get("/")
    assert post(client, export_body(app)).status_code == 200
    r = post(client, export_body(app))
    return r.status_code, r.get_data(as_text=True).strip()


def _tampered(idp: OidcProvider) -> str:
    header, payload, sig = idp.alb_token(VIEWER).split(".")
    claims = json.loads(auth.b64url_decode(payload))
    claims["groups"] = ["capfc-admins"]
    return f"{header}.{_json_b64(claims, pad=True)}.{sig}"


CASES: list[Case] = [
    # ---- sample files (python -m forecasting ingest FILE --freq hourly) -------------------
    _file(
        "ec2_cpu_utilization_empty.csv",
        "error: samples file {bad}/ec2_cpu_utilization_empty.csv is empty (0 bytes)",
    ),
    _file(
        "ec2_cpu_utilization_headeronly.csv",
        "error: samples file {bad}/ec2_cpu_utilization_headeronly.csv has no data rows (columns: timestamp, value)",
    ),
    _file(
        "ec2_cpu_utilization_novaluecolumn.csv",
        "error: samples in {bad}/ec2_cpu_utilization_novaluecolumn.csv is missing required column(s): value "
        "(found: timestamp, val)",
    ),
    _file(
        "ec2_cpu_utilization_notimestampcolumn.csv",
        "error: samples in {bad}/ec2_cpu_utilization_notimestampcolumn.csv is missing required column(s): "
        "timestamp (found: value)",
    ),
    _file(
        "ec2_cpu_utilization_dupcolumns.csv",
        "error: samples file {bad}/ec2_cpu_utilization_dupcolumns.csv has duplicate column name(s): value",
    ),
    _file(
        "ec2_cpu_utilization_ragged.csv",
        "error: samples file {bad}/ec2_cpu_utilization_ragged.csv is not a well-formed CSV file: 1 row(s) do "
        "not have the 2 fields of the header — line 12: 4 fields ('2025-01-01 00:50:00,1,2,3')",
    ),
    _file(
        "ec2_cpu_utilization_binary.csv",
        "error: samples file {bad}/ec2_cpu_utilization_binary.csv is not a readable CSV file: it holds binary "
        "data (NUL bytes)",
    ),
    _file(
        "ec2_cpu_utilization_latin1.csv",
        "error: samples file {bad}/ec2_cpu_utilization_latin1.csv is not a readable CSV file: not UTF-8 text "
        "(binary data, or another encoding: re-save it as UTF-8)",
    ),
    _file(
        "ec2_cpu_utilization_gzipnamedcsv.csv",
        "error: samples file {bad}/ec2_cpu_utilization_gzipnamedcsv.csv is gzip-compressed: name it "
        "ec2_cpu_utilization_gzipnamedcsv.csv.gz",
    ),
    _file(
        "ec2_cpu_utilization_bad.csv.gz",
        "error: samples file {bad}/ec2_cpu_utilization_bad.csv.gz is not a readable gzip file: Error -3 while "
        "decompressing data: invalid stored block lengths",
    ),
    _file(
        "ec2_cpu_utilization_parquetnamedcsv.csv",
        "error: samples file {bad}/ec2_cpu_utilization_parquetnamedcsv.csv is a Parquet file, not CSV: give it "
        "a .parquet extension",
    ),
    _file(
        "ec2_cpu_utilization_truncated.parquet",
        "error: samples file {bad}/ec2_cpu_utilization_truncated.parquet is not a readable Parquet file "
        "(truncated or corrupt?): Could not open Parquet input source "
        "'{bad}/ec2_cpu_utilization_truncated.parquet': Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.",
    ),
    _file(
        "ec2_cpu_utilization_notparquet.parquet",
        "error: samples file {bad}/ec2_cpu_utilization_notparquet.parquet is not a readable Parquet file "
        "(truncated or corrupt?): Could not open Parquet input source "
        "'{bad}/ec2_cpu_utilization_notparquet.parquet': Parquet magic bytes not found in footer. Either the "
        "file is corrupted or this is not a parquet file.",
    ),
    _file(
        "ec2_cpu_utilization_sheet.xlsx",
        "error: samples file {bad}/ec2_cpu_utilization_sheet.xlsx has an unsupported type '.xlsx': use .csv, "
        ".csv.gz, .parquet, .pq",
    ),
    _file(
        "ec2_cpu_utilization_missing.csv",
        "error: samples file not found: {bad}/ec2_cpu_utilization_missing.csv",
    ),
    _file(
        "ec2_cpu_utilization_badtimestamps.csv",
        "error: no usable samples in {bad}/ec2_cpu_utilization_badtimestamps.csv: [samples] bad_timestamp: 300 "
        "dropped — ec2_cpu_utilization_badtimestamps.csv: timestamp missing or unparseable (e.g. 'yesterday', "
        "'yesterday', 'yesterday')",
    ),
    _file(
        "ec2_cpu_utilization_textvalues.csv",
        "error: no usable samples in {bad}/ec2_cpu_utilization_textvalues.csv: [samples] non_numeric: 300 "
        "rejected — ec2_cpu_utilization_textvalues.csv: text in the value column, sample rejected (e.g. "
        "2025-01-01 00:00:00='n/a', 2025-01-01 00:05:00='n/a', 2025-01-01 00:10:00='n/a')",
    ),
    _file(
        "ec2_cpu_utilization_impossiblepercent.csv",
        "error: nothing ingested from {bad}/ec2_cpu_utilization_impossiblepercent.csv: [samples] out_of_range: "
        "576 rejected — percent sample above 105 % (e.g. ec2-impossiblepercent cpu_p95=510, "
        "ec2-impossiblepercent cpu_p95=510.05, ec2-impossiblepercent cpu_p95=510.1)",
    ),
    _file(
        "ec2_cpu_utilization_twosamples.csv",
        "error: nothing ingested from {bad}/ec2_cpu_utilization_twosamples.csv: [samples] low_coverage: 1 "
        "dropped — hourly periods with under 50% of the expected samples: too few for a p95 (e.g. "
        "ec2-twosamples cpu_p95 2025-01-01 00:00 (17%))",
    ),
    _file(
        "long_no_capacity_metric.csv",
        "error: {bad}/long_no_capacity_metric.csv: no capacity metric in the file (metrics found: temperature)",
    ),
    _file("long_duplicate_keys.csv", "", status=3),  # message filled below (several report lines)
    # ---- inventory files (ingest the NAB sample with --inventory FILE) --------------------
    _inventory("inventory_empty.csv", "error: inventory file {bad}/inventory_empty.csv is empty (0 bytes)"),
    _inventory(
        "inventory_missing_columns.csv",
        "error: inventory in {bad}/inventory_missing_columns.csv is missing required column(s): business_unit, "
        "region, environment, criticality, server_type, cpu_cores, memory_gb, disk_gb, monthly_cost_usd "
        "(found: server_id, hostname)",
    ),
    _inventory(
        "inventory.json",
        "error: inventory file {bad}/inventory.json has an unsupported type '.json': use .csv, .csv.gz, "
        ".parquet, .pq",
    ),
    _inventory(
        "inventory_blank_server_id.csv",
        "error: nothing ingested from {nab}: [metrics] unknown_server: 337 rejected — rows for 1 server(s) not "
        "in the inventory (e.g. ec2-24ae8d)\n[inventory] missing_server_id: 1 dropped — rows without a server_id",
    ),
    _inventory(
        "inventory_duplicate_server_id.csv",
        "[inventory] duplicate_server: 1 dropped — server_id listed more than once; first row kept "
        "(e.g. ec2-24ae8d)" + PARTIAL,
        status=3,
    ),
    _inventory(
        "inventory_wrong_types.csv",
        "[inventory] non_numeric: 1 rejected — cpu_cores: text in a numeric column, value set to missing "
        "(e.g. ec2-24ae8d='many')" + PARTIAL,
        status=3,
    ),
    _inventory(
        "inventory_impossible_sizes.csv",
        "[inventory] out_of_range: 1 rejected — cpu_cores negative, set to missing" + PARTIAL,
        status=3,
    ),
    # ---- URLs and ids -------------------------------------------------------------------------
    _server_page(
        "unknown server id",
        "srv-99999",
        "Unknown server. There is no server “srv-99999” in this fleet's plan (run {run}). It may have been "
        "decommissioned, or the link is mistyped: search for a server above.",
    ),
    _server_page(
        "markup as a server id",
        "<script>alert(1)</script>",
        "Unknown server. There is no server “<script>alert(1)</script>” in this fleet's plan (run {run}). It "
        "may have been decommissioned, or the link is mistyped: search for a server above.",
    ),
    _server_page(
        "path traversal as a server id",
        "../../etc/passwd",
        "Unknown server. There is no server “../../etc/passwd” in this fleet's plan (run {run}). It may have "
        "been decommissioned, or the link is mistyped: search for a server above.",
    ),
    _server_page(
        "very long server id",
        "srv-" + "9" * 5000,
        "Unknown server. There is no server “srv-" + "9" * 55 + "…” in this fleet's plan (run {run}). It may "
        "have been decommissioned, or the link is mistyped: search for a server above.",
    ),
    Case(
        "url",
        "asset path traversal",
        lambda c: c.get("/assets/../../../../etc/passwd"),
        404,
        "404 Not Found.",
    ),
    Case(
        "url",
        "encoded asset traversal to the code",
        lambda c: c.get("/assets/%2e%2e/%2e%2e/app/security.py"),
        404,
        "404 Not Found.",
    ),
    Case(
        "url",
        "component bundle traversal",
        lambda c: c.get("/_dash-component-suites/dash/../../../etc/passwd"),
        404,
        "404 Not Found.",
    ),
    Case(
        "url",
        "unknown run (report --run)",
        lambda c: c.cli(
            "report", "--run", "20990101T000000Z-nope", data=str(c.request.getfixturevalue("plan_store_root"))
        ),
        2,
        "error: no run 20990101T000000Z-nope in {store}; the latest is {run}",
    ),
    # ---- sign-in tokens (ALB mode: x-amzn-oidc-data) ------------------------------------------
    _token("no header", lambda idp: None, NO_HEADER),
    _token("forged (another key)", lambda idp: idp.alb_token(PLANNER, key=idp.other_alb_key)),
    _token("expired", lambda idp: idp.alb_token(PLANNER, exp=time.time() - 600)),
    _token("wrong audience (client id)", lambda idp: idp.alb_token(PLANNER, client="someone-elses-app")),
    _token("another load balancer", lambda idp: idp.alb_token(PLANNER, signer=OTHER_ALB_ARN)),
    _token("alg none", lambda idp: idp.alb_token(PLANNER, alg="none")),
    _token("HS256 keyed with the public key", lambda idp: idp.alb_token(PLANNER, alg="HS256")),
    _token("another issuer", lambda idp: idp.alb_token(PLANNER, iss="https://evil.example")),
    _token("unknown kid", lambda idp: idp.alb_token(PLANNER, kid=UNKNOWN_KID)),
    _token("not a JWT", lambda idp: "not.a.jwt"),
    _token("tampered claims (viewer made admin)", _tampered),
    _token("oversized token", lambda idp: "a" * 20_000),
    _token(
        "identity header of someone else",
        lambda idp: idp.alb_token(PLANNER),
        **{auth.ALB_IDENTITY_HEADER: "someone-else"},
    ),
    # ---- filter strings (a shared link's query) ------------------------------------------------
    _filter_link(
        "markup in a filter value",
        "?bu=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "Link filters adjusted. Ignored filter values this fleet does not have: business unit "
        "“<script>alert(1)</script>”.",
    ),
    _filter_link(
        "a very long filter value",
        "?region=" + "x" * 5000,
        "Link filters adjusted. Ignored filter values this fleet does not have: region “" + "x" * 39 + "…”.",
    ),
    _filter_link(
        "unknown value, repeated key",
        "?bu=Atlantis&env=prod&env=prod",
        "Link filters adjusted. Ignored filter values this fleet does not have: business unit “Atlantis”.",
    ),
    # ---- export requests -----------------------------------------------------------------------
    _export(
        "formula as the quick search",
        {f"{ids.RISK_SEARCH}.value": '=HYPERLINK("http://evil.example","x")'},
        '# Grid view,"quick search \'=HYPERLINK(""http://evil.example"",""x"")\'"',
    ),
    _export(
        "filter on an unknown column, sort on code",
        {
            f"{ids.RISK_GRID}.filterModel": {
                "nope": {"filterType": "text", "type": "contains", "filter": "x"}
            },
            f"{ids.RISK_GRID}.columnState": [{"colId": "__proto__", "sort": "asc"}],
        },
        '# Grid view,"none"',  # both dropped (and logged as a WARNING): the export is of all rows
    ),
    Case(
        "export",
        "a viewer exporting a what-if",
        _viewer_export_with_scenario,
        403,
        "Your role (viewer) cannot run what-ifs: that needs the planner role.",
    ),
    Case(
        "export",
        "over the rate limit",
        _export_over_the_rate_limit,
        429,
        "Too many export requests: at most 1 per 1 minute. Wait a little, then try again.",
    ),
    # ---- malformed callback requests (POST /_dash-update-component) -----------------------------
    _bad_request("empty body", b"", "Bad request: the body is empty; a callback request is a JSON object."),
    _bad_request(
        "whitespace body", b"  \n", "Bad request: the body is empty; a callback request is a JSON object."
    ),
    _bad_request("not JSON", b"{output: nope", "Bad request: the body is not valid JSON."),
    _bad_request(
        "plain text content type",
        b'{"output": "x"}',
        "Callback requests must be JSON (Content-Type: application/json).",
        415,
        "text/plain",
    ),
    _bad_request(
        "form content type",
        b"output=x",
        "Callback requests must be JSON (Content-Type: application/json).",
        415,
        "application/x-www-form-urlencoded",
    ),
    _bad_request("JSON array", b"[1, 2]", "Bad request: the body must be a JSON object."),
    _bad_request("JSON null", b"null", "Bad request: the body must be a JSON object."),
    _bad_request("empty object", b"{}", "Bad request: 'output' must name a callback output."),
    _bad_request(
        "output not a string", b'{"output": 5}', "Bad request: 'output' must name a callback output."
    ),
    _bad_request(
        "unknown output",
        b'{"output": "nope.children", "inputs": []}',
        "Bad request: unknown callback output.",
    ),
    _bad_request(
        "markup as the output",
        b'{"output": "<script>alert(1)</script>.x"}',
        "Bad request: unknown callback output.",
    ),
    _bad_request(
        "clientside-only output",
        b'{"output": "shell-scenario.data"}',
        "Bad request: unknown callback output.",
    ),
    _bad_request(
        "missing inputs",
        lambda app: {**export_body(app), "inputs": None},
        "Bad request: 'inputs' must be a list.",
    ),
    _bad_request(
        "inputs a string",
        lambda app: {**export_body(app), "inputs": "x"},
        "Bad request: 'inputs' must be a list.",
    ),
    _bad_request(
        "too few inputs",
        lambda app: {**export_body(app), "inputs": []},
        "Bad request: 'inputs' has 0 item(s); this callback takes 2.",
    ),
    _bad_request(
        "input for another component",
        lambda app: {**export_body(app), "inputs": [{"id": "x", "property": "n_clicks", "value": 1}] * 2},
        "Bad request: 'inputs' does not match this callback's inputs.",
    ),
    _bad_request(
        "input not an object",
        lambda app: {**export_body(app), "inputs": [1, 2]},
        "Bad request: 'inputs': each item must be an object.",
    ),
    _bad_request(
        "wrong state",
        lambda app: {**export_body(app), "state": []},
        "Bad request: 'state' has 0 item(s); this callback takes 5.",
    ),
    _bad_request(
        "changedPropIds not a list",
        lambda app: {**export_body(app), "changedPropIds": "x"},
        "Bad request: 'changedPropIds' must be a list of strings.",
    ),
    _bad_request(
        "outputs a number",
        lambda app: {**export_body(app), "outputs": 3},
        "Bad request: 'outputs' must be a list or an object.",
    ),
    _bad_request(
        "huge body", b"[" + b"1," * 700_000 + b"1]", "Request too large: at most 1,048,576 bytes.", 413
    ),
]

# long format, one server, its first hour delivered twice with other values: the last delivered
# is kept and the conflict reported; the rest is written (exit 3: some rows rejected)
_DUPLICATES = next(i for i, c in enumerate(CASES) if c.name == "long_duplicate_keys.csv")
CASES[_DUPLICATES] = _file(
    "long_duplicate_keys.csv",
    "[samples] conflicting_sample: 12 dropped — several samples at one timestamp with different values; the "
    "last delivered kept (e.g. srv-1 cpu_p95 2025-01-01 00:00, srv-1 cpu_p95 2025-01-01 00:05, srv-1 cpu_p95 "
    "2025-01-01 00:10)\n"
    "[metrics] short_series: 1 flagged — servers with fewer than 72 hourly periods: baseline forecast only "
    "(e.g. srv-1)\n"
    "[inventory] added_server: 1 added — servers seen in the samples but not in an inventory, added with "
    "'unknown' attributes and no capacity figures (e.g. srv-1)",
    status=3,
)


def test_the_corpus_has_at_least_40_cases_of_every_kind():
    kinds = {c.kind for c in CASES}
    assert kinds == {"file", "inventory", "url", "token", "filter", "export", "request"}
    assert len(CASES) >= 40 and len({(c.kind, c.name) for c in CASES}) == len(CASES)


@pytest.fixture
def alb_idp() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def alb_app(make_app, plan_store, plan_store_root, alb_idp) -> Any:
    return make_app(
        plan_store,
        plan_store_root,
        auth_mode="alb",
        auth_issuer=alb_idp.issuer,
        auth_client_id=CLIENT_ID,
        auth_alb_arn=ALB_ARN,
        auth_alb_key_url=alb_idp.alb_key_url,
    )


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}"[:60] for c in CASES])
def test_bad_input_gets_its_message(request, tmp_path, caplog, plan_store_root, case: Case):
    caplog.set_level(logging.INFO)
    ctx = Ctx(request, tmp_path)
    status, said = case.run(ctx)
    from forecasting.sources import open_store

    expected = case.message.format(
        bad=BAD, nab=NAB, store=plan_store_root, run=open_store(str(plan_store_root)).latest_run_id()
    )
    assert (status, said) == (case.status, expected)
    if case.kind in {"file", "inventory"} or case.name.startswith("unknown run"):
        return  # the person gave these paths; the CLI's refusals are ERROR log lines by design
    for word in INTERNAL:
        assert word not in said, word
    assert str(plan_store_root) not in said and str(ROOT) not in said
    assert app_errors(caplog) == [], [r.getMessage() for r in app_errors(caplog)]


# --------------------------------------------------------------------------- fuzz (hypothesis)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_cell = st.none() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True) | st.text(max_size=20)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(
                (
                    "server_id",
                    "hostname",
                    "business_unit",
                    "region",
                    "environment",
                    "criticality",
                    "server_type",
                    "cpu_cores",
                    "memory_gb",
                    "disk_gb",
                    "monthly_cost_usd",
                    "pinned",
                    "dr_role",
                    "dr_partner_id",
                ),
                _cell,
            ),
        ),
        max_size=8,
    )
)
def test_fuzz_the_inventory_validator_reports_or_refuses(rows):
    from forecasting.schema import SchemaError, validate_inventory

    frame = pd.DataFrame(rows)
    try:
        inventory, _report = validate_inventory(frame, "fuzz.csv")
    except SchemaError as e:
        refusal = str(e)
    else:
        assert inventory["server_id"].is_unique
        assert len(inventory) <= len(frame)
        return
    assert "fuzz.csv" in refusal and "\n" not in refusal.strip()


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.sampled_from(["srv-1", "srv-2", "", " ", "x" * 300]),
            st.sampled_from(["cpu_utilization", "mem_used_percent", "temperature", "", "CPU"]),
            st.one_of(st.datetimes(), st.text(max_size=12), st.integers()),
            _cell,
        ),
        max_size=40,
    )
)
def test_fuzz_sample_ingest_reports_or_refuses(samples, tmp_path_factory):
    from forecasting.files import FileFormatError
    from forecasting.ingest import ingest
    from forecasting.schema import SchemaError

    path = tmp_path_factory.mktemp("fuzz") / "fleet_samples.csv"
    pd.DataFrame(samples, columns=["server_id", "metric", "timestamp", "value"]).to_csv(path, index=False)
    try:
        result = ingest(path, freq="hourly")
    except (SchemaError, FileFormatError) as e:
        refusal = str(e)
    else:
        assert not result.metrics.empty
        return
    assert refusal.strip() and "Traceback" not in refusal


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_json)
def test_fuzz_callback_requests_never_500(fixture_app, body):
    client = fixture_app.server.test_client()
    r = post(client, body)
    assert r.status_code < 500, r.get_data(as_text=True)[:300]
    if r.status_code >= 400:
        assert r.content_type.startswith("text/plain") and "Traceback" not in r.get_data(as_text=True)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    output=st.sampled_from(
        ["risk-download.data", "shell-filters.data", "srv-message.children", "ov-heatmap.figure"]
    ),
    values=st.lists(_json, min_size=0, max_size=8),
)
def test_fuzz_well_formed_callbacks_with_hostile_values_never_500(fixture_app, caplog, output, values):
    body = body_for(fixture_app, output)
    for item, value in zip(body["inputs"] + body["state"], values, strict=False):
        item["value"] = value
    body["changedPropIds"] = [f"{i['id']}.{i['property']}" for i in body["inputs"][:1]]
    r = post(fixture_app.server.test_client(), body)
    assert r.status_code in (200, 204), r.get_data(as_text=True)[:300]
    assert "Traceback" not in r.get_data(as_text=True)
    assert app_errors(caplog) == [], [x.getMessage() for x in app_errors(caplog)]


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80), query=st.text(max_size=80))
def test_fuzz_any_path_and_filter_query_never_500(fixture_app, path, query):
    from urllib.parse import quote

    client = fixture_app.server.test_client()
    r = client.get("/" + quote(path, safe="/") + "?" + quote(query, safe="=&"))
    assert r.status_code < 500, (path, query)
    body = body_for(
        fixture_app, "shell-filters.data", {f"{ids.URL}.search": "?" + query}, [f"{ids.URL}.search"]
    )
    assert post(client, body).status_code == 200
