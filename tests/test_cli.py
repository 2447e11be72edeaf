"""The command line end to end: exit codes, one-line errors, summaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forecasting.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_REJECTED, EXIT_STORE, main
from forecasting.sources import open_store

ROOT = Path(__file__).resolve().parents[1]
NAB = ROOT / "tests" / "data" / "nab" / "realAWSCloudwatch"


def run_cli(*args: str, env_data: str | None = None) -> subprocess.CompletedProcess:
    """The real `python -m forecasting` in a subprocess, as a user would call it."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), **({"CAPFC_DATA": env_data} if env_data else {})}
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "data"
    assert (
        main(["--data", str(data), "generate", "--servers", "40", "--days", "200", "--seed", "3"]) == EXIT_OK
    )
    return data


def test_generate_then_validate_via_subprocess(tmp_path):
    data = tmp_path / "data"
    done = run_cli("generate", "--servers", "60", "--days", "120", env_data=str(data))
    assert done.returncode == 0, done.stderr
    assert "Done in" in done.stdout
    assert "60 servers" in done.stdout
    checked = run_cli("--data", str(data), "validate")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Result: OK — 60 servers" in checked.stdout


def test_generate_refuses_to_overwrite_without_force(small_store, capsys):
    assert main(["--data", str(small_store), "generate", "--servers", "5"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "--force" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--servers", "0"], "at least 1"),
        (["generate", "--servers", "10", "--freq", "hourly", "--days", "1"], "days"),
    ],
)
def test_generate_bad_arguments(tmp_path, capsys, args, message):
    assert main(["--data", str(tmp_path / "d"), *args]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error:")
    assert message in err
    assert "Traceback" not in err


def test_run_and_report(small_store, capsys):
    assert main(["--data", str(small_store), "has-plan"]) != EXIT_OK
    assert main(["--data", str(small_store), "run", "--horizon", "30"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "published" in out
    assert "backtest" in out
    assert main(["--data", str(small_store), "has-plan"]) == EXIT_OK
    store = open_store(str(small_store))
    run = store.latest_run_id()
    manifest = store.read_manifest(run)
    assert manifest["config"]["horizon"] == 30
    assert manifest["rows"]["risk"] > 0
    risk = store.read_run_table(run, "risk")
    assert set(risk["server_id"]) == set(store.read_inventory()["server_id"])
    assert main(["--data", str(small_store), "report", "--top", "5"]) == EXIT_OK
    report = capsys.readouterr().out
    assert "Top" in report
    assert "Consolidation" in report or "Recommendations" in report


def test_report_without_run(tmp_path, capsys):
    data = tmp_path / "d"
    main(["--data", str(data), "generate", "--servers", "5", "--days", "60"])
    capsys.readouterr()
    assert main(["--data", str(data), "report"]) == EXIT_STORE
    assert "python -m forecasting run" in capsys.readouterr().err


def test_validate_empty_store_is_clear(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "empty"), "validate"]) == EXIT_BAD_INPUT
    assert "generate" in capsys.readouterr().err


def test_ingest_nab_hourly_and_daily(tmp_path, capsys):
    files = [str(NAB / "ec2_cpu_utilization_24ae8d.csv"), str(NAB / "ec2_network_in_257a54.csv")]
    for freq in ("hourly", "daily"):
        data = tmp_path / freq
        code = main(["--data", str(data), "ingest", *files, "--freq", freq])
        assert code in (EXIT_OK, EXIT_REJECTED)  # partial first/last periods are dropped and reported
        out = capsys.readouterr().out
        assert "Ingested" in out
        metrics = open_store(str(data)).read_metrics()
        assert set(metrics["server_id"]) == {"ec2-24ae8d", "ec2-257a54"}
        expected = 300 if freq == "hourly" else 13
        assert metrics.groupby("server_id").size().min() >= expected
        assert open_store(str(data)).read_store_info()["freq"] == freq


def test_ingest_frequency_must_match_store(tmp_path, capsys):
    data = tmp_path / "d"
    main(["--data", str(data), "ingest", str(NAB / "ec2_cpu_utilization_24ae8d.csv"), "--freq", "hourly"])
    capsys.readouterr()
    code = main(
        ["--data", str(data), "ingest", str(NAB / "ec2_cpu_utilization_53ea38.csv"), "--freq", "daily"]
    )
    assert code == EXIT_BAD_INPUT
    assert "--freq hourly" in capsys.readouterr().err


def test_ingest_non_capacity_metric_is_a_clear_error(tmp_path, capsys):
    code = main(["--data", str(tmp_path / "d"), "ingest", str(NAB / "ec2_disk_write_bytes_1ef3de.csv")])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "not a capacity metric" in err
    assert "Traceback" not in err


# ---- corrupt inputs: each a clear message and a non-zero exit


@pytest.fixture
def good_files(tmp_path) -> tuple[Path, Path]:
    from tests.test_schema import inventory, metrics

    inv, met = tmp_path / "inventory.csv", tmp_path / "metrics.csv"
    inventory(2).to_csv(inv, index=False)
    metrics(["srv-000", "srv-001"], days=40).to_csv(met, index=False)
    return inv, met


def test_validate_good_files(good_files, capsys):
    inv, met = good_files
    assert main(["validate", "--inventory", str(inv), "--metrics", str(met)]) == EXIT_OK
    assert "Result: OK" in capsys.readouterr().out


def test_csv_missing_column(good_files, capsys):
    inv, met = good_files
    pd.read_csv(inv).drop(columns=["business_unit"]).to_csv(inv, index=False)
    assert main(["validate", "--inventory", str(inv), "--metrics", str(met)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "business_unit" in err
    assert "inventory.csv" in err


def test_text_in_numeric_column(good_files, capsys):
    inv, met = good_files
    frame = pd.read_csv(met).astype({"cpu_p95": object})
    frame.loc[4, "cpu_p95"] = "high"
    frame.to_csv(met, index=False)
    assert main(["validate", "--inventory", str(inv), "--metrics", str(met)]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "non_numeric" in out
    assert "'high'" in out


def test_duplicate_rows(good_files, capsys):
    inv, met = good_files
    frame = pd.read_csv(met)
    pd.concat([frame, frame.head(3)]).to_csv(met, index=False)
    assert main(["validate", "--inventory", str(inv), "--metrics", str(met)]) == EXIT_REJECTED
    assert "duplicate_row: 3 dropped" in capsys.readouterr().out


def test_unknown_server(good_files, capsys):
    inv, met = good_files
    frame = pd.read_csv(met)
    frame.loc[0, "server_id"] = "srv-404"
    frame.to_csv(met, index=False)
    assert main(["validate", "--inventory", str(inv), "--metrics", str(met)]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert "unknown_server" in out
    assert "srv-404" in out


def test_truncated_parquet(good_files, tmp_path, capsys):
    inv, met = good_files
    pq_path = tmp_path / "metrics.parquet"
    pd.read_csv(met).to_parquet(pq_path)
    data = pq_path.read_bytes()
    pq_path.write_bytes(data[: len(data) // 2])
    assert main(["validate", "--inventory", str(inv), "--metrics", str(pq_path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "metrics.parquet" in err
    assert "not a readable Parquet file" in err


def test_truncated_parquet_in_store_via_subprocess(small_store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_store, copy)
    target = next((copy / "metrics").rglob("*.parquet"))
    target.write_bytes(target.read_bytes()[:100])
    done = run_cli("--data", str(copy), "validate")
    assert done.returncode == EXIT_STORE
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in done.stderr


def test_invalid_setting_is_named(tmp_path):
    done = run_cli("--data", str(tmp_path), "has-data")
    assert done.returncode != 0
    env_bad = subprocess.run(
        [sys.executable, "-m", "forecasting", "has-data"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "CAPFC_HORIZON": "soon", "CAPFC_DATA": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert env_bad.returncode == EXIT_BAD_INPUT
    assert "CAPFC_HORIZON" in env_bad.stderr


def test_help_lists_commands():
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("generate", "ingest", "validate", "run", "report"):
        assert command in done.stdout
