"""Typed settings, read once from the environment (and an optional `.env` file)."""

import json
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./rankframe.db"
MIN_PRODUCTION_ADMIN_TOKEN_LENGTH = 32

ModelPrices = dict[str, tuple[Decimal, Decimal]]
"""Per model: (input, output) in USD per million tokens, i.e. micro-dollars per token."""


def parse_model_prices(raw: Any) -> ModelPrices:
    """`MODEL_PRICES`: `{"<model>": {"input": 0.1, "output": 0.5}, ...}` in USD per million
    tokens. Anything else is refused with a message naming what is wrong."""
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"MODEL_PRICES is not valid JSON ({exc.msg} at character {exc.pos}); expected "
                '{"<model>": {"input": <USD per million tokens>, "output": <USD per million '
                "tokens>}}"
            ) from None
    if not isinstance(raw, dict):
        raise ValueError(
            'MODEL_PRICES must be a JSON object: {"<model>": {"input": ..., "output": ...}}'
        )
    prices: ModelPrices = {}
    for model, price in raw.items():
        if isinstance(price, tuple) and len(price) == 2:
            price = {"input": price[0], "output": price[1]}
        if not isinstance(price, dict) or set(price) != {"input", "output"}:
            raise ValueError(
                f"MODEL_PRICES[{model!r}] must be an object with exactly `input` and `output`"
            )
        values = []
        for direction in ("input", "output"):
            value = price[direction]
            if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
                raise ValueError(f"MODEL_PRICES[{model!r}].{direction} must be a number")
            try:
                amount = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"MODEL_PRICES[{model!r}].{direction} must be a number") from None
            if not amount.is_finite() or amount < 0:
                raise ValueError(
                    f"MODEL_PRICES[{model!r}].{direction} must be a non-negative number"
                )
            values.append(amount)
        prices[str(model)] = (values[0], values[1])
    return prices


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- the contract's variables (API.md, "Configuration") ---
    database_url: str = DEFAULT_DATABASE_URL
    admin_token: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-haiku-5-5"
    polar_access_token: SecretStr | None = None
    polar_server_url: str = "https://api.polar.sh"
    polar_webhook_secret: SecretStr | None = None
    polar_product_first_time: str | None = None
    polar_product_refill: str | None = None
    polar_product_small: str | None = None
    starter_credits: int = Field(default=500, ge=0)
    trial_days: int = Field(default=7, ge=0)
    framer_plugin_id: str | None = None
    events_webhook_url: str | None = None
    """Where outbound events go; without it they are kept in the outbox, not sent."""
    events_webhook_secret: SecretStr | None = None
    """`whsec_...`: Standard Webhooks signing secret, required with the URL."""
    low_balance_threshold: int = Field(default=50, ge=0, le=10_000_000)
    """A new account's low-balance threshold, in credits (0: no alerts)."""
    plugin_authorize_url: str | None = None
    """The dashboard page approving a plugin sign-in; without it plugin sessions answer 503."""
    model_prices: Annotated[ModelPrices, NoDecode] = Field(default_factory=dict)
    """Overrides of the built-in price table (`app.generation.pricing`), merged over it."""

    # --- operational tuning, documented in the README ---
    environment: Literal["development", "production"] = "development"
    """`production` refuses to start with a short or missing admin token."""
    hold_ttl_seconds: int = Field(default=300, ge=1)
    """How long a single generation's reservation lives before the sweeper releases it."""
    hold_sweep_interval_seconds: float = Field(default=15.0, gt=0)
    """How often the in-app sweeper looks for expired holds."""
    db_pool_size: int = Field(default=10, ge=1)
    db_pool_pre_ping: bool = False
    """Test each pooled PostgreSQL connection with a query before use. Off by default: it
    costs three round trips per checkout (SQLAlchemy's asyncpg ping is BEGIN, `;`,
    ROLLBACK), and a connection whose socket the server closed is replaced at checkout
    without it (`app.db`); a connection that dies silently answers one 503."""
    log_level: str = "INFO"
    cors_allow_localhost: bool = False
    """Development only: also allow `http://localhost:*` and `http://127.0.0.1:*` origins."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body, except generation batches."""
    max_batch_body_bytes: int = Field(default=26_214_400, ge=1024)
    """Largest generation-batch body (up to 1,000 items of page content)."""
    rate_limit_generations_per_minute: int = Field(default=300, ge=1)
    """Per account and server instance; a batch counts once."""
    rate_limit_generations_burst: int = Field(default=60, ge=1)
    rate_limit_purchases_per_minute: int = Field(default=10, ge=1)
    rate_limit_purchases_burst: int = Field(default=5, ge=1)
    polar_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long a Polar API call may take before a purchase intent fails with 502."""
    balance_heartbeat_seconds: float = Field(default=15.0, gt=0)
    """How often the live balance stream sends a heartbeat comment to keep proxies open."""

    # --- generations (README, "Generations") ---
    anthropic_timeout_seconds: float = Field(default=60.0, gt=0)
    """One Messages API attempt; the SDK retries timeouts, 429, 5xx and 529."""
    anthropic_max_retries: int = Field(default=2, ge=0, le=10)
    generation_timeout_seconds: float = Field(default=240.0, gt=0)
    """Budget of one generation, every SDK retry and our one output retry included."""
    generation_concurrency: int = Field(default=8, ge=1, le=256)
    """Batch items this process generates at the same time."""
    batch_hold_ttl_seconds: int = Field(default=600, ge=2)
    """How long a batch item's hold lives without a heartbeat from a live worker."""
    batch_lease_seconds: float = Field(default=60.0, gt=0)
    """How long a worker owns a claimed item without a heartbeat; then any instance retries it."""
    batch_heartbeat_interval_seconds: float = Field(default=15.0, gt=0)
    batch_poll_interval_seconds: float = Field(default=1.0, gt=0)
    """How often an idle worker looks for items (new batches on other instances, dead leases)."""
    batch_max_attempts: int = Field(default=3, ge=1)
    """Claims of one item (each by a worker that then died) before it fails, free of charge."""
    batch_events_interval_seconds: float = Field(default=0.5, gt=0)
    """How often a batch's event stream checks for progress."""
    sse_ping_interval_seconds: float = Field(default=15.0, gt=0)

    # --- outbound events (README, "Alerts and outbound events") ---
    events_retry_schedule_seconds: list[float] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 36000], min_length=1
    )
    """Waits before each retry of a failed delivery; after the last one it is `failed`."""
    events_timeout_seconds: float = Field(default=10.0, gt=0)
    """Longest one delivery attempt may take, connecting and reading included."""
    events_claim_seconds: float = Field(default=60.0, gt=0)
    """How long a dispatcher owns an event it is sending; then another instance may retry it
    (an instance that died mid-send). Longer than the timeout, so never two senders."""
    events_dispatch_interval_seconds: float = Field(default=1.0, gt=0)
    """How often an idle dispatcher looks for due events."""
    events_dispatch_batch: int = Field(default=20, ge=1, le=500)
    """Events one dispatcher claims and sends at once."""
    events_retention_days: float = Field(default=30.0, gt=0)
    """Events (sent, failed, or never sent for want of a URL) are deleted after this."""

    # --- plugin sign-in ---
    plugin_session_ttl_seconds: int = Field(default=600, ge=10)
    plugin_sessions_per_minute: int = Field(default=10, ge=1)
    """Per client address and instance, on `POST /v1/plugin-sessions`."""
    plugin_sessions_burst: int = Field(default=5, ge=1)
    # --- model cost (README, "Model cost") ---
    anthropic_effort: Literal["low", "medium", "high"] = "low"
    """`output_config.effort` for models with adaptive thinking (Claude Haiku 5.5): our
    outputs are one short line or one small JSON object; thinking is turned off for them."""
    framer_image_variant_px: int = Field(default=512, ge=0)
    """Images on `framerusercontent.com` are sent as this variant (`scale-down-to`); 0 sends
    the original."""
    input_budget_meta_title_tokens: int = Field(default=1000, ge=50)
    """Page content beyond this many (estimated) tokens is cut at a paragraph or sentence."""
    input_budget_meta_description_tokens: int = Field(default=1200, ge=50)
    input_budget_schema_tokens: int = Field(default=1000, ge=50)
    input_budget_alt_text_tokens: int = Field(default=300, ge=20)
    """For alt text the budget applies to the `context`."""
    economy_poll_interval_seconds: float = Field(default=30.0, gt=0)
    """How often economy batches are submitted to and polled at the Message Batches API (the
    holds of their items are kept alive every `BATCH_HEARTBEAT_INTERVAL_SECONDS`)."""
    economy_max_requests_per_batch: int = Field(default=10_000, ge=1, le=100_000)
    """Requests in one Anthropic message batch (ours are split beyond it)."""

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_model_prices(cls, value: Any) -> ModelPrices:
        return parse_model_prices(value)

    @model_validator(mode="after")
    def _refuse_weak_admin_token_in_production(self) -> "Settings":
        if self.environment == "production" and self.admin_token is not None:
            token = self.admin_token.get_secret_value()
            if len(token) < MIN_PRODUCTION_ADMIN_TOKEN_LENGTH or token in {"admin", "changeme"}:
                raise ValueError(
                    f"ADMIN_TOKEN must be at least {MIN_PRODUCTION_ADMIN_TOKEN_LENGTH} "
                    "random characters in production"
                )
        return self

    @model_validator(mode="after")
    def _holds_outlive_their_work(self) -> "Settings":
        # A generation's hold must outlive the provider call, and a dead worker's items
        # must be reclaimed (lease + poll) well before their holds expire.
        if self.generation_timeout_seconds >= self.hold_ttl_seconds:
            raise ValueError("GENERATION_TIMEOUT_SECONDS must be below HOLD_TTL_SECONDS")
        if self.batch_heartbeat_interval_seconds >= self.batch_lease_seconds:
            raise ValueError("BATCH_HEARTBEAT_INTERVAL_SECONDS must be below BATCH_LEASE_SECONDS")
        reclaim_within = self.batch_lease_seconds + self.batch_poll_interval_seconds
        if reclaim_within >= self.batch_hold_ttl_seconds:
            raise ValueError(
                "BATCH_LEASE_SECONDS + BATCH_POLL_INTERVAL_SECONDS must be below "
                "BATCH_HOLD_TTL_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _one_sender_per_event(self) -> "Settings":
        if self.events_claim_seconds <= self.events_timeout_seconds:
            raise ValueError("EVENTS_CLAIM_SECONDS must be above EVENTS_TIMEOUT_SECONDS")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
