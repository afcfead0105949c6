"""Settings: every knob the service reads from the environment (or `.env`).

Empty values count as unset, so `FOO=` in a `.env` file means "use the default".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai/"
OPENAI_BASE_URL = "https://api.openai.com/v1"
GEMINI_DEFAULT_MODEL = "gemini-2.5-flash"
OFFLINE_MODEL_NAME = "offline-rules"


def normalize_database_url(url: str) -> str:
    """Map `postgres://`, `postgresql://` and driver variants to psycopg 3's async dialect."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:pass@host/db")
    base = scheme.split("+", 1)[0].lower()
    if base not in {"postgres", "postgresql"}:
        raise ValueError("DATABASE_URL must be a PostgreSQL URL (postgresql:// or postgres://)")
    return f"postgresql+psycopg://{rest}"


def origin_of(url: str) -> str:
    """`http://localhost:3000/some/path/` -> `http://localhost:3000` (what Better Auth puts in iss/aud)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", case_sensitive=False
    )

    # --- database ---
    database_url: str | None = None
    """PostgreSQL URL. Unset: an embedded PostgreSQL under DATA_DIR."""
    data_dir: Path = Path(".data")
    """Where the embedded PostgreSQL and the development signing key live."""
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_max_overflow: int = Field(default=0, ge=0, le=500)
    """Extra connections under bursts. They are closed when returned, so churn costs more CPU than
    a short wait for one of the pool's connections (statements here take well under 1 ms)."""
    database_connect_timeout: float = Field(default=3.0, gt=0)
    """Seconds to wait for a new connection or a free pool slot before answering 503."""
    database_statement_timeout_ms: int = Field(default=10_000, ge=0)
    """Statements running longer are cancelled by PostgreSQL (0: no limit). Behind a transaction
    pooler, see DATABASE_POOLER for where it is applied."""
    database_pooler: Literal["none", "transaction"] = "none"
    """What sits between the service and PostgreSQL. `none`: nothing (a direct connection; the
    statement timeout is a startup option). `transaction`: PgBouncer in transaction mode (any
    version, Debian's 1.18 included) or another transaction pooler: no startup options, no
    server-side prepared statements, the timeout set per transaction (`SET LOCAL`); single
    statements get the role's default (README, "Behind a connection pooler")."""
    database_read_pool_size: int = Field(default=5, ge=1, le=500)
    """Connections per process reserved for reads (REST GETs, conversation reads, read budget
    checks): a pool of their own, so reads never wait behind chat turns' statements."""
    database_ping_idle_seconds: float = Field(default=1.0, ge=0)
    """A pooled connection idle longer than this is checked before use (a dead one is replaced)."""
    migrate_on_start: bool | None = None
    """Apply pending migrations when the app starts. Unset: yes for the embedded database, no with
    DATABASE_URL (run `task-assistant migrate` once per deploy); a database behind the code's
    schema then refuses to start."""

    # --- authentication ---
    better_auth_url: str | None = None
    better_auth_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_secret: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_cache_seconds: int = Field(default=3600, ge=1)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0)
    jwks_refetch_budget: int = Field(default=3, ge=1, le=100)
    """Refetches of the key set that tokens with unknown kids may cause per cooldown."""
    jwt_require_issuer_audience: bool = True
    """With JWT_SECRET, refuse to start unless JWT_ISSUER and JWT_AUDIENCE are set (false: opt out)."""
    max_token_lifetime_seconds: int = Field(default=86_400, ge=60)
    """Tokens whose `exp` lies further ahead than this are refused."""

    # --- HTTP ---
    allowed_origins: str = ""
    """Comma-separated list of origins allowed by CORS, or `*`. Empty: no CORS."""
    log_level: str = "INFO"
    workers: int = Field(default=1, ge=1, le=64)
    """`task-assistant serve` worker processes (`--workers` overrides it)."""
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line (time, level, logger, request_id, message)."""
    metrics_token: str | None = None
    """Set: `GET /metrics` answers a scrape with `Authorization: Bearer <METRICS_TOKEN>`."""
    metrics_public: bool = False
    """`GET /metrics` without a token: 401 unless this is true (then rendered at most once a
    second, whoever asks). For a listener only the scraper can reach."""
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_header_bytes: int = Field(default=16_384, ge=1024)
    """The whole request head (request line and headers); over it: 431."""
    max_header_count: int = Field(default=100, ge=10)
    max_header_field_bytes: int = Field(default=8192, ge=256)
    """One header, name and value; over it: 431."""
    request_read_timeout_seconds: float = Field(default=15.0, gt=0)
    """Deadline for a request's head, and then for its body; over it: 408 and the connection closes."""
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    """An idle keep-alive connection is closed after this."""
    response_write_timeout_seconds: float = Field(default=30.0, gt=0)
    """A client that reads none of a response for this long (the unsent part stays above the
    write buffer's high-water mark) is disconnected, and what was waiting for it is freed."""

    # --- the model ---
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None
    gemini_api_key: str | None = None
    gemini_model: str | None = None
    openai_api_key: str | None = None
    """Only used to decide whether SDK tracing may export to OpenAI."""
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_max_connections: int = Field(default=500, ge=1)

    # --- the agent and the chat turn ---
    agent_instructions: str | None = None
    agent_max_turns: int = Field(default=8, ge=1, le=50)
    chat_timeout_seconds: float = Field(default=30.0, gt=0)
    history_token_budget: int = Field(default=8000, ge=100)
    history_max_messages: int = Field(default=100, ge=1, le=1000)
    max_message_chars: int = Field(default=8000, ge=1)

    # --- limits on what one user can grow (README, "Limits") ---
    max_tasks_per_user: int = Field(default=1000, ge=1, le=1_000_000)
    """Creating one more task answers 409 `task_limit_reached`."""
    max_active_turns_per_user: int = Field(default=4, ge=1, le=1000)
    """Chat turns one user can have running at once (in different conversations, across every
    replica); one more answers 429 `too_many_turns` with Retry-After."""
    max_concurrent_turns: int = Field(default=64, ge=1, le=10_000)
    """Chat turns this process runs at once, all users together; one more answers 503
    `server_busy` with Retry-After at once (it is not queued)."""
    max_turn_cpu: float = Field(default=0.5, gt=0, le=1.0)
    """While this process uses more than this share of one CPU core (over about a second), the
    turns it admits at once shrink, and one more answers 503 `server_busy` too: the rest keeps
    reads quick however many turns the model's latency lets in. 1.0 turns the check off; a few
    turns are always admitted."""
    max_tool_output_chars: int = Field(default=16_000, ge=1000, le=1_000_000)
    """Largest tool result (serialized JSON) that reaches the model and the stored turn."""
    max_page_bytes: int = Field(default=1_000_000, ge=10_000, le=100_000_000)
    """A page of conversation messages stops at this many bytes of text and tool calls."""

    # --- tools transport ---
    tools_transport: Literal["inprocess", "mcp"] = "inprocess"
    mcp_server_url: str | None = None

    # --- reliability ---
    rate_limit_requests: int = Field(default=20, ge=0)
    """Chat turns per user per window (and the largest burst); 0: unlimited."""
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    write_rate_limit_requests: int = Field(default=120, ge=0)
    """REST task writes and MCP tool calls per user per minute; 0: unlimited."""
    read_rate_limit_requests: int = Field(default=600, ge=0)
    """GET requests per user per minute; 0: unlimited."""
    read_budget_batch: int = Field(default=10, ge=1, le=100)
    """Reads a process takes from a user's read budget at once, answering the next ones without a
    round trip (`backend.reliability.prepaid`); 1, or a read budget under ten batches: every
    read is checked on its own."""
    redis_url: str | None = None
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    conversation_lock_seconds: float | None = None
    """How long a turn's claim on its conversation lasts if the process dies; default: timeout + 5 s."""

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < 32:
            raise ValueError(
                "JWT_SECRET must be at least 32 bytes; generate one with `openssl rand -hex 32`"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _normalize_db(cls, value: str | None) -> str | None:
        return normalize_database_url(value) if value else None

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @field_validator("log_format", "database_pooler", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _hs256_needs_issuer_audience(self) -> Settings:
        if (
            self.jwt_secret
            and self.jwt_require_issuer_audience
            and not (self.jwt_issuer and self.jwt_audience)
        ):
            raise ValueError(
                "JWT_SECRET needs JWT_ISSUER and JWT_AUDIENCE (the `iss` and `aud` your HS256 "
                "tokens carry), so a token minted for another service with the same secret is "
                "refused; set JWT_REQUIRE_ISSUER_AUDIENCE=false to accept tokens without them"
            )
        return self

    @model_validator(mode="after")
    def _mcp_transport_needs_url(self) -> Settings:
        if self.tools_transport == "mcp" and not self.mcp_server_url:
            raise ValueError(
                "TOOLS_TRANSPORT=mcp needs MCP_SERVER_URL (e.g. http://127.0.0.1:8000/mcp)"
            )
        return self

    # --- derived values ---
    @property
    def dev_auth(self) -> bool:
        """Neither Better Auth nor a shared secret: trust a local development key."""
        return not self.better_auth_url and not self.jwt_secret and not self.better_auth_jwks_url

    @property
    def migrates_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.database_url is None

    @property
    def jwks_url(self) -> str | None:
        if self.better_auth_jwks_url:
            return self.better_auth_jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None

    @property
    def expected_issuer(self) -> str | None:
        if self.jwt_issuer:
            return self.jwt_issuer
        if self.better_auth_url:
            return origin_of(self.better_auth_url)
        return DEV_ISSUER if self.dev_auth else None

    @property
    def expected_audience(self) -> str | None:
        if self.jwt_audience:
            return self.jwt_audience
        if self.better_auth_url:
            return origin_of(self.better_auth_url)
        return DEV_ISSUER if self.dev_auth else None

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def model_api_key(self) -> str | None:
        return self.llm_api_key or self.gemini_api_key

    @property
    def model_base_url(self) -> str | None:
        if self.llm_base_url:
            return self.llm_base_url
        if self.gemini_api_key and not self.llm_api_key:
            return GEMINI_OPENAI_BASE_URL
        return None

    @property
    def model_name(self) -> str:
        """The model the agent uses; the offline model when no LLM key or base URL is set."""
        if not self.uses_remote_model:
            return OFFLINE_MODEL_NAME
        if self.llm_model:
            return self.llm_model
        if self.gemini_model:
            return self.gemini_model
        return GEMINI_DEFAULT_MODEL

    @property
    def uses_remote_model(self) -> bool:
        return bool(self.model_api_key or self.llm_base_url)

    @property
    def turn_lock_seconds(self) -> float:
        return self.conversation_lock_seconds or self.chat_timeout_seconds + 5


DEV_ISSUER = "task-assistant-dev"


@lru_cache
def get_settings() -> Settings:
    return Settings()
