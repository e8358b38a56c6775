"""Settings come from flags, then THREADLINE_* variables, then defaults."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from threadline import config
from threadline.errors import ConfigurationError
from threadline.redaction import redact


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_without_flags_or_environment() -> None:
    settings = config.load(_parse(), environ={})
    assert settings.address == "127.0.0.1:50051"
    assert settings.database_url == "sqlite:///threadline.db"
    assert settings.uses_offline_model


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    environ = {"THREADLINE_ADDRESS": "127.0.0.1:1", "THREADLINE_MAX_QUERY_CHARS": "10", "OPENAI_API_KEY": "sk-x"}
    settings = config.load(_parse("--address", "127.0.0.1:2"), environ=environ)
    assert settings.address == "127.0.0.1:2"
    assert settings.max_query_chars == 10
    assert not settings.uses_offline_model
    assert config.load(_parse("--offline-model"), environ=environ).uses_offline_model


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"THREADLINE_OFFLINE_MODEL": "maybe"}, "expected true or false"),
        ({"THREADLINE_MAX_QUERY_CHARS": "0"}, "at least 1"),
        ({"THREADLINE_DB_POOL_MIN_SIZE": "5", "THREADLINE_DB_POOL_MAX_SIZE": "2"}, "at most"),
        ({"THREADLINE_MAX_STARTING_TURNS": "-1"}, "THREADLINE_MAX_STARTING_TURNS must be at least 0"),
        ({"THREADLINE_LOG_LEVEL": "chatty"}, "unknown level"),
        ({"THREADLINE_MODEL_HTTP_CLIENT": "requests"}, "THREADLINE_MODEL_HTTP_CLIENT: expected aiohttp or httpx"),
        ({"THREADLINE_EVENT_LOOP": "trio"}, "THREADLINE_EVENT_LOOP: expected uvloop or asyncio"),
        ({"THREADLINE_ADDRESS": "0.0.0.0:50051"}, "refusing to serve 0.0.0.0:50051 without authentication"),
        ({"THREADLINE_ADDRESS": "[::]:50051"}, "refusing to serve"),
        ({"THREADLINE_ADDRESS": "10.1.2.3:50051"}, "refusing to serve"),
        ({"THREADLINE_JWT_JWKS": "/jwks.json"}, "needs THREADLINE_JWT_ISSUER and THREADLINE_JWT_AUDIENCE"),
        ({"THREADLINE_TLS_CERT_FILE": "/c.pem"}, "set THREADLINE_TLS_CERT_FILE and THREADLINE_TLS_KEY_FILE together"),
        ({"THREADLINE_TLS_CLIENT_CA_FILE": "/ca.pem"}, "THREADLINE_TLS_CLIENT_CA_FILE needs TLS"),
        ({"THREADLINE_REFLECTION": "public"}, "expected open, authenticated or off"),
        ({"THREADLINE_TENANT_TURNS_PER_MINUTE": "-1"}, "at least 0"),
        ({"THREADLINE_LOG_FORMAT": "xml"}, "THREADLINE_LOG_FORMAT: expected text or json"),
        ({"THREADLINE_METRICS_ADDRESS": "9464"}, "THREADLINE_METRICS_ADDRESS: expected host:port"),
        ({"THREADLINE_METRICS_ADDRESS": "127.0.0.1:70000"}, "THREADLINE_METRICS_ADDRESS: expected host:port"),
        ({"THREADLINE_ACCESS_LOG": "sometimes"}, "expected true or false"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.load(_parse(), environ=environ)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.1:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/threadline.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("192.168.1.4:50051", False),
        ("example.com:50051", False),
    ],
)
def test_open_mode_is_for_loopback_addresses(address: str, loopback: bool) -> None:
    assert config.is_loopback(address) is loopback
    open_mode = {"THREADLINE_ADDRESS": address}
    if loopback:
        assert not config.load(_parse(), environ=open_mode).authenticated
    else:
        with pytest.raises(ConfigurationError, match="refusing to serve"):
            config.load(_parse(), environ=open_mode)
        assert config.load(_parse(), environ={**open_mode, "THREADLINE_ALLOW_UNAUTHENTICATED": "true"})
        assert config.load(_parse(), environ={**open_mode, "THREADLINE_API_KEYS_FILE": "/keys"}).authenticated


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        ({}, None),  # SQLite: one connection, no wait limit to protect
        ({"THREADLINE_DATABASE_URL": "memory://"}, None),
        ({"THREADLINE_DATABASE_URL": "postgresql://db/x"}, 20),  # twice the default pool of 10
        ({"THREADLINE_DATABASE_URL": "postgres://db/x", "THREADLINE_DB_POOL_MAX_SIZE": "7"}, 14),
        ({"THREADLINE_DATABASE_URL": "postgresql://db/x", "THREADLINE_MAX_STARTING_TURNS": "3"}, 3),
        ({"THREADLINE_MAX_STARTING_TURNS": "5"}, 5),
    ],
)
def test_how_many_turns_start_at_once_follows_the_pool_unless_set(environ: dict[str, str], limit: int | None) -> None:
    assert config.load(_parse(), environ=environ).starting_turns_limit == limit


def test_the_start_up_description_hides_secrets() -> None:
    settings = config.load(
        _parse(), environ={"OPENAI_API_KEY": "sk-secret", "THREADLINE_DATABASE_URL": "postgresql://u:pw@h/db"}
    )
    described = config.describe(settings)
    assert "sk-secret" not in described and ":pw@" not in described
    assert "postgresql://u:***@h/db" in described


NUMERIC_SETTINGS = [f for f in dataclasses.fields(config.Settings) if type(f.default) in (int, float)]


@pytest.mark.parametrize("name", [f.name for f in NUMERIC_SETTINGS])
def test_every_numeric_setting_is_range_checked(name: str) -> None:
    variable = f"THREADLINE_{name.upper()}"
    for bad in ("-1", "nan", "inf", "1e300", "99999999999"):
        with pytest.raises(ConfigurationError, match=variable):
            config.load(_parse(), environ={variable: bad})
    with pytest.raises(ConfigurationError, match=variable):
        config.load(_parse(f"--{name.replace('_', '-')}", "-1"), environ={})


def test_a_secret_is_not_in_the_settings_repr() -> None:
    settings = config.load(_parse(), environ={"OPENAI_API_KEY": "sk-secret", "THREADLINE_DATABASE_URL": "memory://x"})
    assert "sk-secret" not in repr(settings) and "memory://x" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://u@h/db?sslmode=require&PassWord=pw", "postgresql://u@h/db?sslmode=require&PassWord=***"),
        ("postgresql://u@h/db?sslpassword=pw", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://u:p%40w@h/db?password=pw", "postgresql://u:***@h/db?password=***"),
        ("sqlite:///threadline.db", "sqlite:///threadline.db"),
    ],
)
def test_passwords_are_redacted_wherever_they_are_in_a_url(url: str, shown: str) -> None:
    assert redact(url) == shown
    described = config.describe(config.load(_parse(), environ={"THREADLINE_DATABASE_URL": url}))
    assert f"THREADLINE_DATABASE_URL={shown}\n" in described
    assert "=pw" not in described and ":pw@" not in described


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    key, url = tmp_path / "key", tmp_path / "url"
    key.write_text("sk-from-file\n")
    url.write_text("postgresql://u:s3cret@h/db\n")
    environ = {"OPENAI_API_KEY_FILE": str(key), "THREADLINE_DATABASE_URL_FILE": str(url)}
    settings = config.load(_parse(), environ=environ)
    assert settings.openai_api_key == "sk-from-file"
    assert settings.database_url == "postgresql://u:s3cret@h/db"
    described = config.describe(settings)
    assert "sk-from-file" not in described and "s3cret" not in described


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OPENAI_API_KEY": "sk-a", "OPENAI_API_KEY_FILE": "/dev/null"}, "set OPENAI_API_KEY or OPENAI_API_KEY_FILE"),
        ({"THREADLINE_DATABASE_URL_FILE": "/nonexistent/threadline-url"}, "THREADLINE_DATABASE_URL_FILE: cannot read"),
    ],
)
def test_a_secret_file_that_cannot_be_used_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.load(_parse(), environ=environ)
