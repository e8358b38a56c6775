"""Configuration: the one place that reads the environment and `threadline serve` flags.

Every setting is a field of `Settings` with a `THREADLINE_`-prefixed environment
variable and a matching flag; a flag wins over the environment, the environment
over the default. The model's own variables (`OPENAI_API_KEY`, `OPENAI_BASE_URL`)
keep their standard names so existing deployments need no renaming.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from threadline.agent.settings import AgentSettings
from threadline.engine.settings import EngineSettings
from threadline.errors import ConfigurationError
from threadline.redaction import redact
from threadline.storage.settings import StorageSettings
from threadline_client.constants import DEFAULT_ADDRESS, DEFAULT_MAX_MESSAGE_BYTES


def _setting(
    default: Any,
    help: str,
    env: str | None = None,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    secret: bool = False,
    from_file: bool = False,
) -> Any:
    """A setting: its default, help, environment variable (THREADLINE_<NAME> unless named), range, secrecy.

    A number must lie in [at_least (or above, exclusive), at_most]; every numeric setting has both ends.
    A secret is masked in the start-up log; a secret, or a setting marked from_file, may be read from the
    file named by <ENV>_FILE instead.
    """
    if type(default) in (int, float) and ((at_least is None) == (above is None) or at_most is None):
        raise TypeError(f"numeric setting {help!r} needs a range: at_least or above, and at_most")
    return field(
        default=default,
        repr=not secret,
        metadata={
            "help": help,
            "env": env,
            "at_least": at_least,
            "above": above,
            "at_most": at_most,
            "secret": secret,
            "from_file": secret or from_file,
        },
    )


_HOUR = 3600
_DAY = 24 * _HOUR
_YEAR = 365 * _DAY


@dataclass(frozen=True)
class Settings:
    """Everything `threadline serve` can be told."""

    address: str = _setting(DEFAULT_ADDRESS, "host:port the gRPC server listens on")
    workers: int = _setting(
        1,
        "server processes sharing the address (SO_REUSEPORT), one core each; more than 1 needs PostgreSQL",
        at_least=1,
        at_most=256,
    )
    database_url: str = _setting(
        "sqlite:///threadline.db",
        "where checkpoints live: sqlite:///PATH, postgresql://..., or memory://",
        secret=True,
    )
    model: str = _setting("gpt-4o-mini", "model name sent to the OpenAI-compatible endpoint")
    openai_api_key: str = _setting(
        "", "API key of the OpenAI-compatible endpoint; empty: the offline model", env="OPENAI_API_KEY", secret=True
    )
    openai_base_url: str = _setting(
        "", "base URL of the OpenAI-compatible endpoint (vLLM, Ollama, ...)", env="OPENAI_BASE_URL"
    )
    offline_model: bool = _setting(False, "use the built-in offline model even when a key is set")
    offline_token_delay_ms: float = _setting(
        0.0, "pause between the offline model's tokens, to watch streaming by eye", at_least=0, at_most=60_000
    )
    db_pool_min_size: int = _setting(1, "PostgreSQL connections kept open", at_least=1, at_most=1000)
    db_pool_max_size: int = _setting(10, "most PostgreSQL connections open at once", at_least=1, at_most=1000)
    db_pool_timeout_s: float = _setting(
        5.0, "longest wait for a PostgreSQL connection before a call fails with UNAVAILABLE", above=0, at_most=_HOUR
    )
    db_pool_max_lifetime_s: float = _setting(
        3600.0, "PostgreSQL connections older than this are replaced", above=0, at_most=30 * _DAY
    )
    db_pool_max_idle_s: float = _setting(
        600.0, "PostgreSQL connections idle longer than this are closed", above=0, at_most=30 * _DAY
    )
    db_pool_check: bool = _setting(
        True, "check a PostgreSQL connection idle for over 1 s before use (replaces dead ones)"
    )
    db_prepare_threshold: str = _setting(
        "0", "psycopg prepare_threshold: a number, or none for PgBouncer/Supavisor in transaction mode"
    )
    busy_policy: str = _setting(
        "enqueue", "a turn on a busy thread: enqueue (wait, within its deadline) or reject (ABORTED THREAD_BUSY)"
    )
    busy_wait_max_s: float = _setting(
        30.0, "longest an enqueued turn waits when its call has no shorter deadline", at_least=0, at_most=_HOUR
    )
    max_starting_turns: int = _setting(
        0,
        "turns of this process taking their thread and storing their question at once; later ones wait their turn, "
        "within their deadline (0: twice the pool on PostgreSQL, no limit on SQLite and memory://)",
        at_least=0,
        at_most=100_000,
    )
    retention_ttl_s: float = _setting(
        0.0, "delete threads idle longer than this many seconds (0: keep forever)", at_least=0, at_most=100 * _YEAR
    )
    retention_interval_s: float = _setting(300.0, "how often idle threads are looked for", above=0, at_most=30 * _DAY)
    hot_threads: int = _setting(
        256, "threads whose recent states this replica keeps in memory (0: none)", at_least=0, at_most=1_000_000
    )
    system_prompt: str = _setting(
        "", "the default agent's system prompt (or THREADLINE_SYSTEM_PROMPT_FILE: read from a file)", from_file=True
    )
    context_max_tokens: int = _setting(
        100_000,
        "most tokens of conversation the default agent sends its model, newest first (0: all); "
        "counted approximately, so keep it below the model's context length",
        at_least=0,
        at_most=10_000_000,
    )
    approval_tools: str = _setting(
        "", "comma-separated tools of the default agent that wait for a human's approval (e.g. current_time)"
    )
    graph: str = _setting("", "serve a user graph instead: package.module:attr (a StateGraph or factory)")
    shutdown_grace_s: float = _setting(
        10.0, "seconds in-flight calls get to finish on SIGTERM/SIGINT", at_least=0, at_most=_HOUR
    )
    max_message_bytes: int = _setting(
        DEFAULT_MAX_MESSAGE_BYTES, "largest gRPC message received or sent", at_least=64 * 1024, at_most=2**31 - 1
    )
    max_query_chars: int = _setting(16_000, "longest query accepted", at_least=1, at_most=10_000_000)
    stream_buffer_bytes: int = _setting(
        1024 * 1024,
        "most bytes of events one StreamAsk/StreamResume buffers for a reader that is behind; past it the "
        "stream ends with RESOURCE_EXHAUSTED (STREAM_TOO_SLOW) and the turn goes on without it",
        at_least=4096,
        at_most=2**30,
    )
    stream_stall_timeout_s: float = _setting(
        30.0,
        "seconds a stream's reader may read nothing before the stream ends with RESOURCE_EXHAUSTED (STREAM_TOO_SLOW)",
        above=0,
        at_most=_HOUR,
    )
    max_concurrent_rpcs: int = _setting(
        1000,
        "calls one process serves at once (health checks aside); past it calls get RESOURCE_EXHAUSTED "
        "(SERVER_OVERLOADED) with RetryInfo",
        at_least=1,
        at_most=1_000_000,
    )
    max_connections: int = _setting(
        0,
        "client connections one process accepts at once; 0: its open-file limit less a reserve of 256 for the "
        "database, logs and files",
        at_least=0,
        at_most=1_000_000,
    )
    connection_idle_timeout_s: float = _setting(
        600.0, "seconds a client connection with no call open stays open; 0: for ever", at_least=0, at_most=_YEAR
    )
    connection_max_age_s: float = _setting(
        1800.0,
        "seconds after which a client connection is asked to reconnect (spreads clients over new replicas); 0: never",
        at_least=0,
        at_most=_YEAR,
    )
    connection_max_age_grace_s: float = _setting(
        300.0,
        "seconds the calls of a connection past its maximum age get to finish before they are cancelled",
        at_least=0,
        at_most=_DAY,
    )
    model_timeout_s: float = _setting(120.0, "upper bound of one model request", above=0, at_most=_DAY)
    model_max_retries: int = _setting(
        2, "retries langchain-openai makes on a failed model request", at_least=0, at_most=100
    )
    model_http_client: str = _setting(
        "aiohttp", "HTTP client of model requests: aiohttp (less CPU per streamed token) or httpx (langchain-openai's)"
    )
    event_loop: str = _setting(
        "uvloop", "the asyncio event loop: uvloop (libuv: less CPU per call and per token) or asyncio (the stdlib's)"
    )
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting(
        "text", "log lines as text (for people) or json (one object per line, with the call's rpc, tenant and ids)"
    )
    access_log: bool = _setting(
        False, "log one line per RPC, health checks included: method, status code, duration, peer, tenant, ids"
    )
    metrics_address: str = _setting(
        "", "host:port serving Prometheus metrics at /metrics, unauthenticated (empty: no metrics)"
    )
    metrics_tenant_label: bool = _setting(
        False,
        "label handled calls, turns, model and tool calls, busy waits and interrupts with the caller's tenant "
        "(one series per tenant: mind the cardinality)",
    )
    api_keys_file: str = _setting(
        "", "file of API keys' hashes: lines TENANT SHA256_HEX [SCOPES [LABEL]] (`threadline keys new` makes one)"
    )
    jwt_jwks: str = _setting("", "JWT access tokens: the signing keys, a JWKS file path or https:// URL")
    jwt_issuer: str = _setting("", "JWT access tokens: the required `iss` (needed with THREADLINE_JWT_JWKS)")
    jwt_audience: str = _setting("", "JWT access tokens: the required `aud` (needed with THREADLINE_JWT_JWKS)")
    jwt_tenant_claim: str = _setting("tenant", "JWT access tokens: the claim naming the caller's tenant")
    allow_unauthenticated: bool = _setting(
        False, "serve without API keys or JWTs (open mode) on a non-loopback address; logs a warning"
    )
    tls_cert_file: str = _setting("", "PEM certificate chain: serve TLS (with THREADLINE_TLS_KEY_FILE)")
    tls_key_file: str = _setting("", "PEM private key of THREADLINE_TLS_CERT_FILE")
    tls_client_ca_file: str = _setting("", "PEM CA bundle: require client certificates signed by it (mTLS)")
    reflection: str = _setting("open", "gRPC server reflection: open, authenticated (valid credentials) or off")
    tenant_max_concurrent_turns: int = _setting(
        0, "turns one tenant may run at once in this process (0: no limit)", at_least=0, at_most=1_000_000
    )
    tenant_turns_per_minute: int = _setting(
        0, "turns one tenant may start per minute in this process (0: no limit)", at_least=0, at_most=1_000_000_000
    )

    @property
    def prepare_threshold(self) -> int | None:
        """db_prepare_threshold as psycopg wants it."""
        return None if self.db_prepare_threshold.strip().lower() == "none" else int(self.db_prepare_threshold)

    @property
    def uses_postgres(self) -> bool:
        """True when checkpoints live in PostgreSQL."""
        return urlsplit(self.database_url).scheme in ("postgres", "postgresql")

    @property
    def starting_turns_limit(self) -> int | None:
        """max_starting_turns, or by default twice the pool on PostgreSQL and no limit otherwise.

        The limit keeps a burst's statements from waiting out the pool timeout; SQLite's one
        connection has no such timeout, and limiting it only slows a burst's starts down
        (bench/open_streams.py).
        """
        if self.max_starting_turns:
            return self.max_starting_turns
        return 2 * self.db_pool_max_size if self.uses_postgres else None

    @property
    def uses_offline_model(self) -> bool:
        """True when turns are answered by the built-in offline model."""
        return self.offline_model or not self.openai_api_key

    @property
    def authenticated(self) -> bool:
        """True when calls must carry credentials (API keys or JWTs configured); False: open mode."""
        return bool(self.api_keys_file or self.jwt_jwks)

    @property
    def tls(self) -> bool:
        """True when the server serves TLS."""
        return bool(self.tls_cert_file)

    @property
    def agent(self) -> AgentSettings:
        """The agent's settings."""
        return AgentSettings(
            system_prompt=self.system_prompt,
            context_max_tokens=self.context_max_tokens,
            graph=self.graph,
            approval_tools=tuple(name.strip() for name in self.approval_tools.split(",") if name.strip()),
            offline=self.uses_offline_model,
            offline_token_delay_s=self.offline_token_delay_ms / 1000,
            model=self.model,
            api_key=self.openai_api_key,
            base_url=self.openai_base_url,
            timeout_s=self.model_timeout_s,
            max_retries=self.model_max_retries,
            http_client=self.model_http_client,
        )

    @property
    def storage(self) -> StorageSettings:
        """Storage's settings (beyond the database URL)."""
        return StorageSettings(
            pool_min_size=self.db_pool_min_size,
            pool_max_size=self.db_pool_max_size,
            pool_timeout_s=self.db_pool_timeout_s,
            pool_max_lifetime_s=self.db_pool_max_lifetime_s,
            pool_max_idle_s=self.db_pool_max_idle_s,
            pool_check=self.db_pool_check,
            prepare_threshold=self.prepare_threshold,
            busy_wait_max_s=self.busy_wait_max_s,
            hot_threads=self.hot_threads,
        )

    @property
    def engine(self) -> EngineSettings:
        """The engine's settings, with its agent's and storage's."""
        return EngineSettings(
            database_url=self.database_url,
            storage=self.storage,
            agent=self.agent,
            max_query_chars=self.max_query_chars,
            wait_when_busy=self.busy_policy == "enqueue",
            max_starting_turns=self.starting_turns_limit,
            max_response_bytes=self.max_message_bytes,
        )


def _env_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata["env"] or "THREADLINE_" + f.name.upper()


def _flag_name(f: dataclasses.Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    kind: Callable[[str], Any] = type(f.default)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigurationError(f"{_env_name(f)}: expected true or false, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{_env_name(f)}: expected {type(f.default).__name__}, got {raw!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting; the help names its environment variable and default."""
    for f in dataclasses.fields(Settings):
        shown_default = "(empty)" if f.default == "" else f.default
        help_text = f"{f.metadata['help']} [env {_env_name(f)}{_file_note(f)}; default {shown_default}{_range_note(f)}]"
        if type(f.default) is bool:
            parser.add_argument(
                _flag_name(f), dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(_flag_name(f), dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def _file_note(f: dataclasses.Field[Any]) -> str:
    return f" or {_env_name(f)}_FILE" if f.metadata["from_file"] else ""


def _range_note(f: dataclasses.Field[Any]) -> str:
    if type(f.default) not in (int, float):
        return ""
    low = f"{f.metadata['at_least']:g}" if f.metadata["at_least"] is not None else f"above {f.metadata['above']:g}"
    return f"; range {low} to {f.metadata['at_most']:g}"


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Builds Settings from flags (when given), then the environment, then defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value if isinstance(flag_value, bool) else _coerce(f, str(flag_value))
        elif _env_name(f) in environ:
            values[f.name] = _coerce(f, environ[_env_name(f)])
        elif f.metadata["from_file"] and f"{_env_name(f)}_FILE" in environ:
            values[f.name] = _coerce(f, _read_setting_file(f"{_env_name(f)}_FILE", environ[f"{_env_name(f)}_FILE"]))
        if f.metadata["from_file"] and _env_name(f) in environ and f"{_env_name(f)}_FILE" in environ:
            raise ConfigurationError(f"set {_env_name(f)} or {_env_name(f)}_FILE, not both")
    settings = Settings(**values)
    _validate(settings)
    return settings


def _read_setting_file(variable: str, path: str) -> str:
    """A setting from a file (as container platforms mount secrets), without its trailing line break."""
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{variable}: cannot read {path!r}: {reason}") from None


def _validate(settings: Settings) -> None:
    for f in dataclasses.fields(Settings):
        _check_range(f, getattr(settings, f.name))
    if settings.workers > 1 and not settings.uses_postgres:
        raise ConfigurationError(
            f"THREADLINE_WORKERS={settings.workers} needs a postgresql:// database: SQLite and memory:// keep "
            "one writer per thread with locks inside one process, which other worker processes cannot see "
            "(PostgreSQL's thread holds work across processes); use THREADLINE_WORKERS=1 with them"
        )
    if not 1 <= settings.db_pool_min_size <= settings.db_pool_max_size:
        raise ConfigurationError(
            "THREADLINE_DB_POOL_MIN_SIZE must be at least 1 and at most THREADLINE_DB_POOL_MAX_SIZE"
        )
    if settings.busy_policy not in ("enqueue", "reject"):
        raise ConfigurationError(f"THREADLINE_BUSY_POLICY: expected enqueue or reject, got {settings.busy_policy!r}")
    try:
        settings.prepare_threshold  # noqa: B018 - parses it
    except ValueError:
        raise ConfigurationError(
            f"THREADLINE_DB_PREPARE_THRESHOLD: expected a number or none, got {settings.db_prepare_threshold!r}"
        ) from None
    if settings.model_http_client not in ("aiohttp", "httpx"):
        raise ConfigurationError(
            f"THREADLINE_MODEL_HTTP_CLIENT: expected aiohttp or httpx, got {settings.model_http_client!r}"
        )
    if settings.event_loop not in ("uvloop", "asyncio"):
        raise ConfigurationError(f"THREADLINE_EVENT_LOOP: expected uvloop or asyncio, got {settings.event_loop!r}")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError(f"THREADLINE_LOG_LEVEL: unknown level {settings.log_level!r}")
    if settings.log_format not in ("text", "json"):
        raise ConfigurationError(f"THREADLINE_LOG_FORMAT: expected text or json, got {settings.log_format!r}")
    _validate_metrics_address(settings.metrics_address)
    _validate_security(settings)


def _validate_security(settings: Settings) -> None:
    if settings.jwt_jwks and not (settings.jwt_issuer and settings.jwt_audience):
        raise ConfigurationError(
            "THREADLINE_JWT_JWKS needs THREADLINE_JWT_ISSUER and THREADLINE_JWT_AUDIENCE: "
            "without them a token of any issuer, for any service, would be accepted"
        )
    if "://" in settings.jwt_jwks and not settings.jwt_jwks.startswith("https://"):
        raise ConfigurationError(
            f"THREADLINE_JWT_JWKS must be a file path or an https:// URL, got {settings.jwt_jwks!r}"
        )
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise ConfigurationError("set THREADLINE_TLS_CERT_FILE and THREADLINE_TLS_KEY_FILE together")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        raise ConfigurationError("THREADLINE_TLS_CLIENT_CA_FILE needs TLS: set THREADLINE_TLS_CERT_FILE and _KEY_FILE")
    if settings.reflection not in ("open", "authenticated", "off"):
        raise ConfigurationError(
            f"THREADLINE_REFLECTION: expected open, authenticated or off, got {settings.reflection!r}"
        )
    if not settings.authenticated and not settings.allow_unauthenticated and not is_loopback(settings.address):
        raise ConfigurationError(
            f"refusing to serve {settings.address} without authentication: anyone who reaches it could read and "
            "delete every thread. Set THREADLINE_API_KEYS_FILE or THREADLINE_JWT_JWKS, listen on a loopback "
            "address, or set THREADLINE_ALLOW_UNAUTHENTICATED=true"
        )


def _validate_metrics_address(address: str) -> None:
    if not address:
        return
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"THREADLINE_METRICS_ADDRESS: expected host:port, got {address!r}")


def is_loopback(address: str) -> bool:
    """True when a gRPC listening address reaches this machine only: a loopback host or a unix socket."""
    if address.startswith("unix:"):
        return True
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_range(f: dataclasses.Field[Any], value: Any) -> None:
    """Raises ConfigurationError, naming the variable, for a number outside the setting's range."""
    if type(f.default) not in (int, float):
        return
    at_least, above, at_most = f.metadata["at_least"], f.metadata["above"], f.metadata["at_most"]
    low = f"at least {at_least:g}" if at_least is not None else f"above {above:g}"
    in_range = math.isfinite(value) and value <= at_most
    in_range = in_range and (value >= at_least if at_least is not None else value > above)
    if not in_range:
        raise ConfigurationError(f"{_env_name(f)} must be {low} and at most {at_most:g}, got {value!r}")


def describe(settings: Settings) -> str:
    """One line per setting for the start-up log, secrets masked (a URL keeps all but its passwords)."""
    lines = []
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "database_url":
            value = redact(value)
        elif f.metadata["secret"] and value:
            value = "***"
        lines.append(f"  {_env_name(f)}={value}")
    return "\n".join(lines)
