"""Settings, read once from the environment with strict parsing.

Every environment variable Tally reads is declared here and nowhere else
(README.md, "Configuration", lists them). A bad value raises
``pydantic.ValidationError`` at start-up, naming the variable.

When ``DATABASE_URL`` / ``REDIS_URL`` are not in the environment, the values
``tally up`` wrote to ``.tally/runtime.env`` are used, so every ``tally``
command run from the same directory reaches the same servers.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Where ``tally up`` keeps its embedded servers' data and the URLs it uses.
DATA_DIR = Path(os.environ.get("TALLY_DATA_DIR", ".tally"))
RUNTIME_ENV_FILE = DATA_DIR / "runtime.env"

#: One rate limit in limits' notation (``1000/second``, ``60 per 5 minutes``).
_RATE_LIMIT = re.compile(
    r"\s*[1-9][0-9]*\s*(/|per)\s*([1-9][0-9]*\s*)?(second|minute|hour|day|month|year)s?\s*"
)


class Settings(BaseSettings):
    """Tally's configuration; each field maps to one environment variable.

    Field names are the variable names lower-cased; fields without an alias
    take the ``TALLY_`` prefix (``batch_size`` reads ``TALLY_BATCH_SIZE``).
    """

    model_config = SettingsConfigDict(
        env_prefix="TALLY_",
        env_file=RUNTIME_ENV_FILE,
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        default="postgresql+psycopg://postgres@127.0.0.1:5432/tally",
        validation_alias="DATABASE_URL",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")

    #: ISO 4217 codes enabled for new wallets and transactions.
    currencies: Annotated[tuple[str, ...], NoDecode] = ("SGD", "JPY", "USD", "EUR")

    # Apply path.
    batch_size: int = Field(default=1000, ge=1, le=10000)
    #: How long one drain message keeps applying new work before it hands the
    #: stream back to the queue (docs/architecture.md, "The apply stream").
    drain_budget_seconds: float = Field(default=2.0, ge=0, le=60)
    #: How long a drain waits before its next claim when its last one emptied
    #: the stream, so that the next batch carries what arrives meanwhile
    #: (docs/architecture.md, "The apply stream"). 0: claim again at once.
    apply_gather_seconds: float = Field(default=0.02, ge=0, le=1)
    apply_attempts_max: int = Field(default=5, ge=1, le=100)
    retry_backoff_base_seconds: float = Field(default=0.5, gt=0, le=60)
    retry_backoff_max_seconds: float = Field(default=30.0, gt=0, le=600)
    task_retries_max: int = Field(default=8, ge=0, le=100)
    lock_timeout_ms: int = Field(default=3000, ge=10)
    statement_timeout_ms: int = Field(default=15000, ge=100)
    db_pool_size: int = Field(default=10, ge=1, le=100)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    broker_visibility_timeout_seconds: int = Field(default=3600, ge=60)
    broker_publish_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    stream_signal_ttl_seconds: int = Field(default=30, ge=1, le=3600)

    # Beat schedule (seconds unless named otherwise).
    sweep_interval_seconds: float = Field(default=15.0, gt=0)
    sweep_pending_age_seconds: float = Field(default=30.0, ge=0)
    stream_lock_idle_seconds: float = Field(default=60.0, gt=0)
    hold_expiry_interval_seconds: float = Field(default=60.0, gt=0)
    #: How often beat releases due scheduled transactions (docs/api.md, "Scheduled transactions").
    schedule_interval_seconds: float = Field(default=5.0, gt=0)
    snapshot_hour_utc: int = Field(default=0, ge=0, le=23)
    snapshot_minute_utc: int = Field(default=10, ge=0, le=59)
    archive_interval_seconds: float = Field(default=86400.0, gt=0)
    archive_after_days: int = Field(default=90, ge=1)
    archive_chunk_size: int = Field(default=5000, ge=1)
    reconcile_interval_seconds: float = Field(default=3600.0, gt=0)
    maintenance_timeout_seconds: float = Field(default=1800.0, gt=0)
    beat_lock_timeout_seconds: int = Field(default=30, ge=5)

    # Webhooks (docs/webhooks.md): delivery, backoff, the sweep, auto-disable (seconds).
    #: Allow receivers on private, loopback and link-local addresses (SSRF guard off).
    webhook_allow_private_networks: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: Threads of ``tally serve webhooks``: attempts in flight at once, per process.
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_backoff_base_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    #: How long a delivery is retried before it ends ``failed`` (docs/api.md, "Webhooks": at least 24 h).
    webhook_retry_window_seconds: float = Field(default=86400.0, gt=0)
    #: An endpoint is disabled once its attempts have failed this many times in a row
    #: AND for TALLY_WEBHOOK_DISABLE_AFTER_SECONDS since its last success: both.
    webhook_disable_after_failures: int = Field(default=50, ge=1)
    webhook_disable_after_seconds: float = Field(default=5 * 86400.0, ge=0)
    #: Attempts in flight to one endpoint at once, over every webhook worker (a Redis
    #: semaphore): a slow receiver holds at most this many threads.
    webhook_endpoint_concurrency: int = Field(default=4, ge=1, le=256)
    webhook_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    #: Events older than this many days are deleted once none of their deliveries is
    #: pending (beat's prune job, every TALLY_ARCHIVE_INTERVAL_SECONDS); Stripe keeps 30.
    event_retention_days: int = Field(default=30, ge=1)
    #: How long an attempt owns its delivery; past it, a dead worker's attempt is re-sent.
    webhook_attempt_lease_seconds: float = Field(default=60.0, gt=0)

    # Rate limits per API key, by the key's role (api/limits.py): limits' notation,
    # "N/second", "N per minute", several separated by ";". Far above what one key
    # sends on a small machine by default, so they stop runaway clients, not load.
    rate_limit_service: str = "20000/second"
    rate_limit_ops: str = "2000/second"
    rate_limit_enabled: bool = True
    #: The API processes that share each key's traffic; each allows its share of the
    #: limit (api/limits.py). 0: TALLY_WEB_WORKERS, the processes of one host.
    rate_limit_processes: int = Field(default=0, ge=0, le=4096)

    #: The longest a single submission waits to share its INSERT and commit with
    #: others in flight in the same API process (shared/services/group_commit.py),
    #: in seconds; a submission alone never waits. 0: share only what queued anyway.
    intake_gather_seconds: float = Field(default=0.001, ge=0, le=0.01)
    #: Backpressure (shared/services/backpressure.py): a recording waits while its
    #: API process has accepted more than this many transactions beyond the apply
    #: stream's progress, and the stream is moving; 0 turns it off. Two full apply
    #: batches (TALLY_BATCH_SIZE) by default, so the stream still gets full batches.
    intake_backlog_max: int = Field(default=2000, ge=0)
    #: Recordings stop waiting for a stream that has settled nothing for this
    #: long, in seconds: intake goes on whatever the workers' state.
    intake_backlog_stall_seconds: float = Field(default=1.0, gt=0, le=60)

    # Processes.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: Two API processes of 16 threads by default: one process holds one
    #: interpreter lock, so it is one core of intake at most, and on the 2-core
    #: reference machine a second one completed 5–30% more single submissions
    #: a second in three series of alternated pairs (docs/benchmarks.md, series 16;
    #: series 9 found the opposite when a submission cost twice as much).
    web_workers: int = Field(default=2, ge=1, le=64)
    web_threads: int = Field(default=16, ge=1, le=256)
    web_keepalive_seconds: int = Field(default=75, ge=1, le=3600)
    worker_concurrency: int = Field(default=2, ge=1, le=256)
    #: How much ``tally serve worker``, ``webhooks`` and ``beat`` lower their CPU
    #: priority: added to the niceness they start with (``nice(2)``; 0 leaves it,
    #: 19 at most). Where they share a host and a scheduling group with the API
    #: (``tally up``; not separate containers), a request then takes a
    #: core before an apply batch or a sweep does; their database work runs in
    #: PostgreSQL's backends, at its own priority
    #: (docs/operations.md, "Process priorities").
    background_nice: int = Field(default=10, ge=0, le=19)
    log_level: str = "INFO"
    #: ``json``: one JSON object per line (production, log shippers); ``console``:
    #: structlog's coloured key=value lines for a terminal (``tally up`` sets it).
    log_format: Literal["json", "console"] = "json"
    #: The API's info lines (one access line per request) are written together at
    #: most this many seconds after the first of them, warnings and errors at once
    #: (shared/logs.py, ``BufferedLines``); 0 writes each line at once. A line and
    #: a flush per request cost the intake's latency at half the maximum rate
    #: (docs/benchmarks.md, series 21).
    web_log_flush_seconds: float = Field(default=0.02, ge=0, le=1)
    #: Port of Flower (``tally serve flower``, ``tally up --flower``); it binds ``host``.
    flower_port: int = Field(default=5555, ge=1, le=65535)
    #: prometheus-client's multiprocess directory (its own variable name): when set,
    #: every process writes its metrics there and ``/metrics`` serves them all.
    prometheus_multiproc_dir: str | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )

    @field_validator("currencies", mode="before")
    @classmethod
    def _split_currencies(cls, value: object) -> object:
        """Parse ``"SGD,JPY"`` into ``("SGD", "JPY")``; reject non-ISO-4217 codes."""
        if isinstance(value, str):
            value = tuple(code.strip().upper() for code in value.split(",") if code.strip())
        from shared.ledger.errors import UnknownCurrency  # local: keeps config import-light
        from shared.ledger.money import exponent_of

        if isinstance(value, tuple | list):
            for code in value:
                try:
                    exponent_of(code)
                except UnknownCurrency as error:  # reported by pydantic, naming the variable
                    raise ValueError(error.detail) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        """Make a plain ``postgresql://`` URL use psycopg 3 (SQLAlchemy defaults to psycopg2)."""
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> Settings:
        """Require the timeouts that docs/architecture.md orders ("Transient failures") to be in that order.

        Redis's visibility timeout must exceed the longest retry countdown (a
        longer countdown is delivered twice: kombu#337, celery#5935), and
        ``lock_timeout`` must be below ``statement_timeout`` (so a lock wait
        fails as a retryable 55P03, not as a statement timeout).
        """
        if self.broker_visibility_timeout_seconds <= self.retry_backoff_max_seconds:
            raise ValueError(
                "TALLY_BROKER_VISIBILITY_TIMEOUT_SECONDS must exceed "
                "TALLY_RETRY_BACKOFF_MAX_SECONDS"
            )
        if self.lock_timeout_ms >= self.statement_timeout_ms:
            raise ValueError("TALLY_LOCK_TIMEOUT_MS must be below TALLY_STATEMENT_TIMEOUT_MS")
        return self

    @property
    def rate_limit_process_count(self) -> int:
        """Return the API processes a key's limit is shared over: the setting, or web workers."""
        return self.rate_limit_processes or self.web_workers

    @field_validator("rate_limit_service", "rate_limit_ops")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        """Accept ``"N/second"``, ``"N per 5 minutes"`` and ``;``-separated lists of them."""
        parts = [part for part in value.split(";") if part.strip()]
        if not parts or not all(_RATE_LIMIT.fullmatch(part) for part in parts):
            raise ValueError(
                f"{value!r} is not a rate limit such as '1000/second' or '60 per minute'"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        """Accept only the standard logging level names."""
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level


@functools.cache
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first call.

    Raises:
        pydantic.ValidationError: a variable holds a value its parser rejects.
    """
    return Settings()
