"""backend.core.config: what a deployment's settings accept, refuse and derive. Never reads the
developer's .env (`_env_file=None`) and starts from an environment without the service's
variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from backend.core.config import (
    DEV_ISSUER,
    GEMINI_DEFAULT_MODEL,
    GEMINI_OPENAI_BASE_URL,
    OFFLINE_MODEL_NAME,
    Settings,
    normalize_database_url,
    origin_of,
)

SECRET = "s" * 32


@pytest.fixture(autouse=True)
def _no_service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in list(os.environ):
        if name.upper() in fields:
            monkeypatch.delenv(name)


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# --- database URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql+psycopg2://u@h/db?sslmode=require",
            "postgresql+psycopg://u@h/db?sslmode=require",
        ),
        ("POSTGRESQL://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_postgresql_urls_are_mapped_to_the_async_psycopg_dialect(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert make(database_url=given).database_url == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://u@h/db", "must be a PostgreSQL URL"),
        ("sqlite:///x.db", "must be a PostgreSQL URL"),
        ("localhost:5432/db", "must look like postgresql://"),
        ("just-a-word", "must look like postgresql://"),
    ],
)
def test_other_database_urls_are_refused(given: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_database_url(given)
    with pytest.raises(ValidationError, match=message):
        make(database_url=given)


def test_an_empty_database_url_means_the_embedded_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    settings = make()
    assert settings.database_url is None
    assert settings.migrates_on_start is True


@pytest.mark.parametrize(
    ("values", "migrates"),
    [
        ({}, True),
        ({"database_url": "postgresql://h/db"}, False),
        ({"database_url": "postgresql://h/db", "migrate_on_start": True}, True),
        ({"migrate_on_start": False}, False),
    ],
)
def test_migrating_on_start_defaults_to_the_embedded_database_only(
    values: dict[str, Any], migrates: bool
) -> None:
    assert make(**values).migrates_on_start is migrates


# --- the environment ----------------------------------------------------------------------------


def test_settings_come_from_the_environment_case_insensitively(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    monkeypatch.setenv("workers", "3")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = make()
    assert settings.gemini_api_key == "from-env"
    assert settings.workers == 3
    assert settings.data_dir == tmp_path


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKERS", "")
    monkeypatch.setenv("LOG_LEVEL", "")
    settings = make()
    assert settings.workers == 1
    assert settings.log_level == "INFO"


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MAX_TURNS", "3")
    assert make(agent_max_turns=5).agent_max_turns == 5


def test_an_invalid_value_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "not-a-number")
    with pytest.raises(ValidationError, match="max_body_bytes"):
        make()


def test_an_unknown_setting_does_not_stop_the_service_starting() -> None:
    settings = make(workers=2, no_such_setting="x")
    assert settings.workers == 2


# --- bounds and choices -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workers", 0),
        ("workers", 65),
        ("database_pool_size", 0),
        ("database_pool_size", 501),
        ("database_connect_timeout", 0),
        ("jwt_leeway_seconds", -1),
        ("jwt_leeway_seconds", 301),
        ("max_token_lifetime_seconds", 59),
        ("max_body_bytes", 1023),
        ("max_header_field_bytes", 255),
        ("agent_max_turns", 51),
        ("chat_timeout_seconds", 0),
        ("history_token_budget", 99),
        ("max_tasks_per_user", 0),
        ("max_tasks_per_user", 1_000_001),
        ("max_tool_output_chars", 999),
        ("rate_limit_requests", -1),
        ("rate_limit_window_seconds", 0),
        ("jwks_refetch_budget", 101),
        ("idempotency_ttl_seconds", 59),
    ],
)
def test_out_of_range_numbers_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        make(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workers", 64),
        ("database_pool_size", 500),
        ("jwt_leeway_seconds", 0),
        ("max_token_lifetime_seconds", 60),
        ("max_tool_output_chars", 1000),
        ("rate_limit_requests", 0),  # 0: unlimited
        ("max_tasks_per_user", 1),
    ],
)
def test_numbers_at_the_bounds_are_accepted(field: str, value: Any) -> None:
    assert getattr(make(**{field: value}), field) == value


@pytest.mark.parametrize(("given", "expected"), [("debug", "DEBUG"), ("Warning", "WARNING")])
def test_log_level_is_case_insensitive(given: str, expected: str) -> None:
    assert make(log_level=given).log_level == expected


@pytest.mark.parametrize("given", ["verbose", "TRACE", "info "])
def test_unknown_log_levels_are_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="LOG_LEVEL must be"):
        make(log_level=given)


def test_log_format_is_case_insensitive_and_only_text_or_json() -> None:
    assert make(log_format="JSON").log_format == "json"
    with pytest.raises(ValidationError):
        make(log_format="xml")


def test_mcp_transport_needs_a_server_url() -> None:
    with pytest.raises(ValidationError, match="TOOLS_TRANSPORT=mcp needs MCP_SERVER_URL"):
        make(tools_transport="mcp")
    settings = make(tools_transport="mcp", mcp_server_url="http://127.0.0.1:8000/mcp")
    assert settings.mcp_server_url == "http://127.0.0.1:8000/mcp"


# --- authentication ---------------------------------------------------------------------------


def test_an_empty_jwt_secret_in_the_environment_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "")
    settings = make()
    assert settings.jwt_secret is None
    assert settings.dev_auth is True


@pytest.mark.parametrize("secret", ["short", "x" * 31])
def test_a_short_jwt_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        make(jwt_secret=secret, jwt_issuer="i", jwt_audience="a")


def test_the_jwt_secret_length_counts_bytes() -> None:
    settings = make(jwt_secret="é" * 16, jwt_issuer="i", jwt_audience="a")  # 32 bytes
    assert settings.jwt_secret == "é" * 16
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        make(jwt_secret="é" * 15, jwt_issuer="i", jwt_audience="a")


@pytest.mark.parametrize(
    "values", [{}, {"jwt_issuer": "https://app"}, {"jwt_audience": "https://app"}]
)
def test_a_jwt_secret_needs_issuer_and_audience(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET needs JWT_ISSUER and JWT_AUDIENCE"):
        make(jwt_secret=SECRET, **values)


def test_the_issuer_audience_rule_can_be_switched_off() -> None:
    settings = make(jwt_secret=SECRET, jwt_require_issuer_audience=False)
    assert settings.dev_auth is False
    assert settings.expected_issuer is None
    assert settings.expected_audience is None


def test_development_auth_when_nothing_is_configured() -> None:
    settings = make()
    assert settings.dev_auth is True
    assert settings.expected_issuer == DEV_ISSUER
    assert settings.expected_audience == DEV_ISSUER
    assert settings.jwks_url is None


@pytest.mark.parametrize(
    "values",
    [
        {"better_auth_url": "https://auth.example.com"},
        {"better_auth_jwks_url": "https://auth.example.com/keys"},
        {"jwt_secret": SECRET, "jwt_issuer": "i", "jwt_audience": "a"},
    ],
)
def test_any_real_auth_turns_development_auth_off(values: dict[str, str]) -> None:
    assert make(**values).dev_auth is False


def test_better_auth_url_gives_the_jwks_url_and_its_origin_as_issuer_and_audience() -> None:
    settings = make(better_auth_url="https://auth.example.com/base/")
    assert settings.jwks_url == "https://auth.example.com/base/api/auth/jwks"
    assert settings.expected_issuer == "https://auth.example.com"
    assert settings.expected_audience == "https://auth.example.com"


def test_explicit_jwks_url_issuer_and_audience_win() -> None:
    settings = make(
        better_auth_url="https://auth.example.com",
        better_auth_jwks_url="https://keys.example.com/jwks.json",
        jwt_issuer="issuer-x",
        jwt_audience="audience-y",
    )
    assert settings.jwks_url == "https://keys.example.com/jwks.json"
    assert settings.expected_issuer == "issuer-x"
    assert settings.expected_audience == "audience-y"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://localhost:3000/some/path/", "http://localhost:3000"),
        ("https://app.example.com", "https://app.example.com"),
        ("https://app.example.com/?q=1#x", "https://app.example.com"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


# --- the model ----------------------------------------------------------------------------------


def test_without_a_key_or_base_url_the_offline_model_is_used() -> None:
    settings = make(llm_model="gpt-4o", gemini_model="gemini-x")
    assert settings.uses_remote_model is False
    assert settings.model_name == OFFLINE_MODEL_NAME


def test_a_gemini_key_alone_uses_gemini_through_its_openai_endpoint() -> None:
    settings = make(gemini_api_key="g-key")
    assert settings.uses_remote_model is True
    assert settings.model_api_key == "g-key"
    assert settings.model_base_url == GEMINI_OPENAI_BASE_URL
    assert settings.model_name == GEMINI_DEFAULT_MODEL


def test_gemini_model_picks_the_gemini_model() -> None:
    assert make(gemini_api_key="g", gemini_model="gemini-2.5-pro").model_name == "gemini-2.5-pro"


def test_an_llm_key_wins_over_a_gemini_key_and_talks_to_openai() -> None:
    settings = make(llm_api_key="l-key", gemini_api_key="g-key", llm_model="gpt-4o-mini")
    assert settings.model_api_key == "l-key"
    assert settings.model_base_url is None  # the OpenAI default
    assert settings.model_name == "gpt-4o-mini"


def test_a_base_url_alone_is_a_remote_model_without_a_key() -> None:
    settings = make(llm_base_url="http://localhost:11434/v1", llm_model="llama3")
    assert settings.uses_remote_model is True
    assert settings.model_api_key is None
    assert settings.model_base_url == "http://localhost:11434/v1"
    assert settings.model_name == "llama3"


def test_llm_model_wins_over_gemini_model() -> None:
    settings = make(llm_api_key="k", llm_model="gpt-4o", gemini_model="gemini-2.5-pro")
    assert settings.model_name == "gpt-4o"


# --- other derived values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "origins"),
    [
        ("", []),
        ("*", ["*"]),
        (" http://a.test , ,http://b.test ", ["http://a.test", "http://b.test"]),
    ],
)
def test_cors_origins_are_a_trimmed_comma_separated_list(given: str, origins: list[str]) -> None:
    assert make(allowed_origins=given).cors_origins == origins


@pytest.mark.parametrize(
    ("values", "seconds"),
    [
        ({}, 35.0),
        ({"chat_timeout_seconds": 10}, 15.0),
        ({"conversation_lock_seconds": 120}, 120),
    ],
)
def test_a_turns_claim_outlives_its_timeout_unless_set(
    values: dict[str, Any], seconds: float
) -> None:
    assert make(**values).turn_lock_seconds == seconds
