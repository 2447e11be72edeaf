"""The whole product on S3: generate → run → report → app, against a real S3 server (SeaweedFS).

Selected by the data URI alone, exactly as on local disk (issue: cloud data sources).
"""

from __future__ import annotations

import itertools

import pytest

from app import create_app, get_context
from forecasting.cli import EXIT_OK, EXIT_STORE, main
from forecasting.settings import load_settings
from forecasting.sources import open_store
from tests.s3server import ADMIN, aws_env, seaweed

__all__ = ["aws_env", "seaweed"]  # fixtures, imported for pytest

_runs = itertools.count()


@pytest.fixture
def s3_uri(seaweed, aws_env) -> str:
    aws_env(ADMIN, seaweed.url)  # credentials from the standard chain, endpoint via AWS_ENDPOINT_URL
    return f"s3://{seaweed.new_bucket()}/capfc-{next(_runs)}"


@pytest.mark.slow
def test_generate_run_report_and_app_on_s3(s3_uri, capsys, tmp_path):
    assert main(["--data", s3_uri, "generate", "--servers", "30", "--days", "120", "--seed", "4"]) == EXIT_OK
    assert main(["--data", s3_uri, "validate"]) == EXIT_OK
    assert main(["--data", s3_uri, "run", "--horizon", "14"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"published to {s3_uri}" in out
    store = open_store(s3_uri)
    run = store.latest_run_id()
    assert run is not None
    for name in ("forecasts", "risk", "recommendations", "backtest"):
        assert len(store.read_run_table(run, name)) > 0
    assert main(["--data", s3_uri, "report", "--top", "3"]) == EXIT_OK
    assert f"run {run}" in capsys.readouterr().out

    app = create_app(load_settings(data=s3_uri), cache_type="simple", cache_dir=str(tmp_path / "cache"))
    plan = get_context(app).readmodel.plan()
    assert plan is not None
    assert plan.run_id == run
    assert plan.n_servers == 30
    client = app.server.test_client()
    assert client.get("/healthz").status_code == 200
    for path in ("/", "/risk", "/consolidation", f"/servers/{plan.servers().iloc[0]['server_id']}"):
        assert client.get(path).status_code == 200


def test_missing_bucket_is_a_clear_cli_error(seaweed, aws_env, capsys):
    aws_env(ADMIN, seaweed.url)
    assert main(["--data", "s3://no-such-bucket-capfc/prefix", "validate"]) == EXIT_STORE
    err = capsys.readouterr().err
    assert "no-such-bucket-capfc" in err
    assert "Traceback" not in err
