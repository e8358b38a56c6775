"""Settings come from flags, then THREADLINE_* variables, then defaults."""

from __future__ import annotations

import argparse

import pytest

from threadline import config
from threadline.errors import ConfigurationError


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
    environ = {"THREADLINE_ADDRESS": "0.0.0.0:1", "THREADLINE_MAX_QUERY_CHARS": "10", "OPENAI_API_KEY": "sk-x"}
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
        ({"THREADLINE_MAX_STARTING_TURNS": "-1"}, "THREADLINE_MAX_STARTING_TURNS must be 0"),
        ({"THREADLINE_LOG_LEVEL": "chatty"}, "unknown level"),
        ({"THREADLINE_MODEL_HTTP_CLIENT": "requests"}, "THREADLINE_MODEL_HTTP_CLIENT: expected aiohttp or httpx"),
        ({"THREADLINE_EVENT_LOOP": "trio"}, "THREADLINE_EVENT_LOOP: expected uvloop or asyncio"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.load(_parse(), environ=environ)


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
