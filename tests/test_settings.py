"""Settings: defaults < YAML file < CAPFC_ environment; bad values name the setting."""

from __future__ import annotations

import pytest

from forecasting.settings import DEFAULT_THRESHOLDS, SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in (
        "CAPFC_DATA",
        "CAPFC_CONFIG",
        "CAPFC_HORIZON",
        "CAPFC_FREQ",
        "CAPFC_MODEL",
        "CAPFC_THRESHOLDS",
        "CAPFC_RATE_LIMIT",
        "CAPFC_REDIS_URL",
        "CAPFC_PROXY_HOPS",
        "CAPFC_MAX_REQUEST_BYTES",
        "CAPFC_FORCE_HTTPS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    s = load_settings()
    assert s.data == "./data"
    assert s.freq == "daily" and s.effective_horizon == 90
    assert s.thresholds == DEFAULT_THRESHOLDS
    assert s.criticality_offsets["critical"] < 0


def test_hourly_default_horizon_is_a_week():
    assert load_settings(freq="hourly").effective_horizon == 168


def test_yaml_then_env_override(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("horizon: 30\nmodel: naive\nthresholds:\n  cpu_p95: 70\n")
    monkeypatch.setenv("CAPFC_CONFIG", str(cfg))
    s = load_settings()
    assert (s.horizon, s.model, s.thresholds["cpu_p95"], s.thresholds["mem_p95"]) == (30, "naive", 70.0, 90.0)
    monkeypatch.setenv("CAPFC_HORIZON", "45")
    assert load_settings().horizon == 45


def test_config_argument_and_capfc_yaml_in_cwd(tmp_path):
    (tmp_path / "capfc.yaml").write_text("headroom: 0.3\n")
    assert load_settings().headroom == 0.3
    other = tmp_path / "other.yaml"
    other.write_text("headroom: 0.1\n")
    assert load_settings(config=str(other)).headroom == 0.1


def test_env_data_uri(monkeypatch):
    monkeypatch.setenv("CAPFC_DATA", "s3://bucket/prefix")
    assert load_settings().data == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("CAPFC_HORIZON", "abc", "CAPFC_HORIZON"),
        ("CAPFC_HORIZON", "0", "CAPFC_HORIZON"),
        ("CAPFC_FREQ", "weekly", "CAPFC_FREQ"),
        ("CAPFC_MODEL", "magic", "CAPFC_MODEL"),
        ("CAPFC_DATA", "ftp://x/y", "CAPFC_DATA"),
        ("CAPFC_THRESHOLDS", '{"cpu_p95": 150}', "CAPFC_THRESHOLDS"),
        ("CAPFC_THRESHOLDS", '{"gpu": 50}', "CAPFC_THRESHOLDS"),
    ],
)
def test_invalid_settings_name_the_setting(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_unknown_yaml_key_is_an_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("horizn: 30\n")
    with pytest.raises(SettingsError, match="horizn"):
        load_settings(config=str(cfg))


@pytest.mark.parametrize("text", ["- a\n- b\n", "key: [unclosed\n"])
def test_malformed_yaml_is_clear(tmp_path, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=r"c\.yaml"):
        load_settings(config=str(cfg))


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config=str(tmp_path / "nope.yaml"))


def test_web_hardening_settings_default_and_validate(monkeypatch):
    s = load_settings()
    assert s.rate_limit == "30/minute" and s.max_request_bytes == 1_048_576
    assert s.max_jobs == 4 and s.max_jobs_per_user == 2 and s.proxy_hops == 0
    assert s.redis_url is None and s.force_https is False
    monkeypatch.setenv("CAPFC_RATE_LIMIT", "10 per second; 200 per hour")
    monkeypatch.setenv("CAPFC_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CAPFC_PROXY_HOPS", "1")
    s = load_settings()
    assert s.rate_limit == "10 per second; 200 per hour" and s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.proxy_hops == 1
    for var, bad, word in [
        ("CAPFC_RATE_LIMIT", "lots", "CAPFC_RATE_LIMIT"),
        ("CAPFC_REDIS_URL", "http://cache:6379", "CAPFC_REDIS_URL"),
        ("CAPFC_MAX_REQUEST_BYTES", "10", "CAPFC_MAX_REQUEST_BYTES"),
        ("CAPFC_PROXY_HOPS", "-1", "CAPFC_PROXY_HOPS"),
    ]:
        monkeypatch.setenv(var, bad)
        with pytest.raises(SettingsError, match=word):
            load_settings()
        monkeypatch.delenv(var)


def test_a_scheduler_address_alone_selects_the_dask_engine(monkeypatch):
    monkeypatch.setenv("CAPFC_SCHEDULER", "tcp://scheduler:8786")
    assert load_settings().engine == "dask"
    monkeypatch.setenv("CAPFC_ENGINE", "local")  # an explicit engine wins
    assert load_settings().engine == "local"
    monkeypatch.delenv("CAPFC_SCHEDULER")
    monkeypatch.delenv("CAPFC_ENGINE")
    assert load_settings().engine == "local"
