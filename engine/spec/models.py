"""Pydantic models of the spec files.

These models are the single source of truth for the spec format: the published JSON Schemas in
`specs/schema/` are generated from them (`engine schema`), and a test keeps the two in step.
Every model forbids unknown keys, so a typo in a TOML file is an error that names the key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Expression = Annotated[
    str,
    Field(
        description="A sandboxed Jinja2 expression, compiled at load time. Names available depend on where it"
        " is used: `request`, `model`, `operation` for wire rules and mappings; `status`, `error`,"
        " `provider` for error rules.",
        min_length=1,
    ),
]


def _operation_names(by_model_only: bool = False) -> list[str]:
    """The names of `engine.operations.OPERATIONS`, the one table of operations. Read lazily: that table
    holds each operation's parser and codecs, which import these models."""
    from engine.operations import OPERATIONS

    return [name for name, row in OPERATIONS.items() if row.resolve == "model" or not by_model_only]


def operation_needs_key(name: str) -> bool:
    from engine.operations import OPERATIONS

    return OPERATIONS[name].keyed


def operation_row(name: str) -> Any:
    """The operation's row in `engine.operations.OPERATIONS` (for the loader's cross-checks)."""
    from engine.operations import OPERATIONS

    return OPERATIONS[name]


def _known_operation(name: str) -> str:
    if name not in _operation_names():
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(_operation_names())}")
    return name


def _served_operation(name: str) -> str:
    if name not in _operation_names(by_model_only=True):
        raise ValueError(f"{name!r} is not an operation a model serves; known: {', '.join(_operation_names(True))}")
    return name


Operation = Annotated[
    str,
    AfterValidator(_known_operation),
    Field(json_schema_extra=lambda schema: schema.update(enum=_operation_names())),
]
ServedOperation = Annotated[
    str,
    AfterValidator(_served_operation),
    Field(json_schema_extra=lambda schema: schema.update(enum=_operation_names(by_model_only=True))),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared pieces


class ErrorMatch(Strict):
    """One way an upstream error can look. Every field given must hold; a list holds when any entry does."""

    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list,
        description="The upstream status (for an error inside a 200 or a stream: the one it stands for).",
    )
    code: list[str] = Field(default_factory=list, description="`error.code`, compared without regard to case.")
    type: list[str] = Field(default_factory=list, description="`error.type`, compared without regard to case.")
    message: str | None = Field(default=None, description="A regular expression searched in the upstream message.")
    has: list[str] = Field(
        default_factory=list,
        description="Key names found anywhere in the upstream error body, in any spelling: case, `_` and `-`"
        " are ignored, so `inner_error` also matches `innererror` and `innerError`.",
    )


class ErrorRule(Strict):
    """Match an upstream error and replace what the client sees.

    The client always gets OpenAI's four-key error body; a rule decides its status, type, code, param
    and message. An unset message is the upstream's, redacted and truncated; unset type, code and param
    are the gateway's own (the status's default type, null code and param) unless listed in `keep`. A rule
    holds when its `when` holds (if it has one) and one of its `match` entries does (if it has any).
    """

    name: str = Field(description="Short identifier, shown in logs and `engine lower --error`.")
    why: str | None = Field(default=None, description="What upstream answer this is, and why it is rewritten.")
    when: Expression | None = Field(
        default=None,
        description="Condition over `status` (int), `error` (message/type/code/param/keys of the upstream"
        " error, normalized) and `provider` (id).",
    )
    match: list[ErrorMatch] = Field(default_factory=list, description="Alternatives; the rule needs one to hold.")
    answer_as: str | None = Field(
        default=None,
        description="Answer as the routes.toml rule of this name does (its status, type, code, param and"
        " message): a provider's rule recognizes its own shape of a shared error, such as `content-filter`.",
    )
    status: int | None = Field(default=None, ge=400, le=599, description="HTTP status for the client.")
    type: str | None = None
    code: str | None = None
    param: str | None = None
    message: str | None = Field(
        default=None, description="Replaces the upstream message entirely (the sanitized text)."
    )
    keep: list[Literal["type", "code", "param"]] = Field(
        default_factory=list,
        description="Upstream fields passed on to the client instead of the gateway's own (none, by default):"
        " only when they read as an identifier or a request path, and after redaction.",
    )

    @model_validator(mode="after")
    def _matches_something(self) -> ErrorRule:
        if self.when is None and not self.match:
            raise ValueError("an error rule needs `when` or `match`")
        if self.answer_as is not None and any(
            v is not None for v in (self.status, self.type, self.code, self.param, self.message)
        ):
            raise ValueError(
                "a rule with `answer_as` takes its answer from that rule: drop status/type/code/param/message"
            )
        return self


# --------------------------------------------------------------------------- routes.toml


class Gateway(Strict):
    name: str = Field(description="Deployment name: `owned_by` fallback and the OpenCode provider id.")
    key_prefix: str = Field(pattern=r"^[a-z][a-z0-9]*-$", description="Prefix of every gateway key.")
    max_body_mb: int = Field(default=32, ge=1, description="Largest request body accepted, in MiB.")
    max_json_depth: int = Field(
        default=64,
        ge=2,
        le=256,
        description="How deeply a JSON request body may nest objects and arrays (the body itself is level 1);"
        " deeper is a 400 json_too_deep. At most 256, well inside what the parser itself can take.",
    )
    key_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a verified gateway key is trusted without a database lookup (so also how long"
        " a revoked key may keep working); 0 checks the database on every request.",
    )
    deadline_header: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="Request header in which a client gives its own deadline, in milliseconds from now: it"
        " bounds all upstream attempts together (retries and fallbacks included).",
    )
    carry_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long provider state carried across turns by reference (Anthropic's thinking blocks) is"
        " kept for the client's next turn.",
    )
    answer_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an answer waits for a client that reads none of it: a large JSON answer is sent"
        " in parts, each when the client has taken the last, and a stream event by event; one that waits longer"
        " ends the connection (a stream's upstream call with it), and the answer's memory is freed.",
    )


class LedgerPolicy(Strict):
    """The usage ledger: one row per proxied request, written in batches, rolled up into days."""

    flush_seconds: float = Field(
        default=1.0, gt=0, description="How often pending usage rows are written (and the most a crash loses)."
    )
    batch_rows: int = Field(default=1000, ge=1, description="Write early once this many rows are pending.")
    receipt_field: str = Field(
        default="compose_receipt",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Top-level field of the answer carrying the receipt (usage, cost, request id) on routes"
        " with `receipt = true`. Routes without it strip the field like any in `sanitize.strip_fields`.",
    )
    retention_days: int = Field(
        default=35,
        ge=1,
        description="Raw rows older than this many days are rolled up into daily aggregates per key, model,"
        " provider and operation, and deleted.",
    )
    carry_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="How long provider state carried across turns by reference (Anthropic's thinking blocks) is"
        " kept for the client's next turn.",
    )


class LimitValues(Strict):
    """Per-key limits. Unset means no limit of that kind (at this level: a tier or key may still set it)."""

    rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute (a bucket of that size, refilled continuously)."
    )
    tpm: int | None = Field(default=None, ge=1, description="Tokens (prompt + completion) per minute.")
    concurrent: int | None = Field(default=None, ge=1, description="Requests in flight at once.")
    daily_usd: float | None = Field(default=None, gt=0, description="Spend per UTC day, in USD.")
    monthly_usd: float | None = Field(default=None, gt=0, description="Spend per UTC calendar month, in USD.")


LIMIT_NAMES: tuple[str, ...] = tuple(LimitValues.model_fields)


class Limits(Strict):
    """Limits as data: `defaults` for every key, then the key's tier, then the key's own values, each level
    overriding the one before for the limits it sets (`engine keys create|update` sets tier and values)."""

    defaults: LimitValues = LimitValues()
    default_tier: str | None = Field(default=None, description="The tier of keys created without one.")
    tiers: dict[str, LimitValues] = Field(default_factory=dict, description="Named tiers, e.g. free, pro.")
    concurrency_lease_seconds: float = Field(
        default=900.0,
        gt=0,
        description="With a shared limiter (ENGINE_REDIS): how long the concurrency slots of an instance that"
        " died holding them stay taken. A live instance renews its own every third of this.",
    )
    sync_seconds: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="With a shared limiter: how often an instance settles a busy key with Redis (spend, tokens,"
        " slots handed back) and renews its lease; a budget spent on one instance is seen by all within about"
        " this.",
    )
    lease_share: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="With a shared limiter: the most of a key's rpm, tpm or concurrency limit one instance may hold"
        " in advance, so that busy keys need no Redis round trip per request. Below one request or slot it"
        " holds nothing and each admission asks Redis. 0: always ask.",
    )


class DiagnosticHeaders(Strict):
    public_model: str = Field(pattern=r"^[a-z0-9-]+$")
    upstream_provider: str = Field(pattern=r"^[a-z0-9-]+$")
    upstream_model: str = Field(pattern=r"^[a-z0-9-]+$")
    fallback_from: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="When set, an answer served after a fallback names the providers that failed first.",
    )
    attempts: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="When set, every proxied answer says how many upstream attempts it took (retries included).",
    )
    upstream_request_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="When set, the upstream's request id (the first of `sanitize.request_id_headers` it sent)"
        " is passed on under this name, success or error, for support tickets: never in a body.",
    )
    overhead: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="When set, responses carry the gateway's own time in ms (total minus upstream wait).",
    )
    request_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+$",
        description="When set, proxied answers carry the id of their usage-ledger row.",
    )


class Sanitize(Strict):
    strip_fields: list[str] = Field(
        default_factory=list,
        description="Top-level body fields removed from client requests and from upstream answers.",
    )
    redact_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions whose matches are replaced by `[redacted]` in upstream error"
        " messages (provider key shapes, signed URLs). Provider keys and base URLs are always redacted.",
    )
    request_id_headers: list[str] = Field(
        default_factory=lambda: ["x-request-id", "apim-request-id"],
        description="Upstream response headers that carry the upstream's request id, by preference.",
    )
    forward_headers: list[str] = Field(
        default_factory=list,
        description="Upstream response headers passed on to the client (lower-case; `x-ratelimit-*`"
        " style prefixes allowed), e.g. `retry-after` on a 429.",
    )


TimeUnit = Literal["s", "ms"]


class Fallback(Strict):
    """Which failed attempts are tried again (`engine/attempts.py` applies it).

    Before anything reached the client, a failed attempt is retried on the same provider (its `[retry]`
    table says how often and how long to back off), then the next live provider serving the same public
    ID (by `provider.priority`) is tried. A 4xx other than 408, 409 and 429 is the request's fault and is
    answered as it is."""

    max_providers: int = Field(default=2, ge=1, description="Providers tried per request, the first included.")
    on_status: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: [408, 409, 429, 500, 502, 503, 504],
        description="Upstream HTTP statuses retried, then moved on from. Only 408, 409, 429 and 5xx may be listed.",
    )
    exhausted_codes: list[str] = Field(
        default_factory=lambda: ["insufficient_quota"],
        description="Upstream error codes meaning the gateway's account at that provider is out of quota:"
        " the next provider is tried, the same one never again for this request.",
    )
    on_unreachable: bool = Field(
        default=True,
        description="Retry when the upstream refuses the connection or it cannot be made in time, before the"
        " request was sent.",
    )
    on_timeout: bool = Field(
        default=False,
        description="Move on to the next provider when the request was sent and then no answer came in time, or"
        " the connection dropped. Off by default: that provider may have done, and billed, the work.",
    )
    retry_after_max: float = Field(
        default=10.0,
        ge=0,
        description="Longest wait, in seconds, an upstream's retry-after is honoured for; a longer one moves on to"
        " the next provider instead (or is answered, with its retry-after, when none is left).",
    )
    retry_after_headers: dict[str, TimeUnit] = Field(
        default_factory=lambda: dict[str, TimeUnit](
            {"retry-after-ms": "ms", "x-ms-retry-after-ms": "ms", "retry-after": "s"}
        ),
        description="Upstream headers that say how long to wait before retrying, in order of preference, and"
        " their unit (`retry-after` may also be an HTTP date).",
    )

    @field_validator("on_status")
    @classmethod
    def _only_retryable_statuses(cls, statuses: list[int]) -> list[int]:
        wrong = [s for s in statuses if s < 500 and s not in (408, 409, 429)]
        if wrong:
            raise ValueError(f"{wrong}: a 4xx other than 408, 409 and 429 is the request's fault, never retried")
        return statuses


class UpstreamLimits(Strict):
    """Bounds on what the gateway reads from any upstream answer, so a broken or hostile upstream cannot
    exhaust its memory. Sizes are of the decoded body (a 2 MB gzip bomb counts as what it inflates to)."""

    max_answer_mb: float = Field(
        default=64,
        gt=0,
        description="Largest decoded answer read from an upstream (a JSON body, or a whole stream); past it the"
        " client gets 502 `upstream_response_too_large`. Overridden per provider by `provider.max_answer_mb`.",
    )
    max_error_kb: float = Field(
        default=64, gt=0, description="An upstream error body is read up to this size; the rest is discarded."
    )
    max_message_chars: int = Field(
        default=2000, ge=80, description="Upstream error messages are truncated to this many characters."
    )


class ServerLimits(Strict):
    """The HTTP server's own bounds (`engine/server.py`), checked before a request reaches the gateway. Each is
    answered in OpenAI's error shape and closes the connection."""

    max_header_kb: int = Field(
        default=64,
        ge=1,
        description="Largest request head (request line and header fields), in KiB; larger is a 431"
        " `request_headers_too_large`, answered as soon as that much has arrived.",
    )
    max_headers: int = Field(
        default=100, ge=1, description="Most header fields in one request; more is a 431 `request_headers_too_large`."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time a request's head may take to arrive, from the connection's start (or, on a kept-alive"
        " connection, the request's first byte); slower is a 408 `request_timeout` (slowloris).",
    )
    body_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Time a request's body may take to arrive, from its head's end to its last byte (a whole-body"
        " deadline, so a trickle cannot hold a connection); slower is a 408 `request_timeout`.",
    )
    keep_alive_seconds: int = Field(
        default=5, ge=1, description="An idle kept-alive connection is closed after this many seconds."
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Most open connections per worker process. At the cap a new connection ends the one that has"
        " waited longest for an unfinished head (a 408), or, none waiting, is answered 503"
        " `too_many_connections` (with retry-after). Unset: no cap but the process's file limit.",
    )


class BreakerPolicy(Strict):
    """Per-provider circuit breakers (`engine/health.py`): a provider failing again and again is skipped for
    a while instead of being tried by every request, then probed by a single one."""

    failures: int = Field(
        default=5,
        ge=1,
        description="Attempts in a row failing by the provider's fault (unreachable, timed out,"
        " 5xx, garbage) that open its circuit.",
    )
    cooldown: float = Field(default=30.0, gt=0, description="Seconds an open circuit waits before one probe.")
    window: float = Field(
        default=60.0, gt=0, description="Seconds of history behind the health document's recent error rate."
    )


class Route(Strict):
    method: Literal["GET", "POST"]
    path: str = Field(pattern=r"^/", description="Litestar path; `{model:path}` captures IDs with slashes.")
    operation: Operation
    auth: Literal["gateway_key", "none"] = "gateway_key"
    max_body_mb: int | None = Field(
        default=None,
        ge=1,
        description="Largest request body this route accepts, in MiB (default: gateway.max_body_mb). Larger"
        " uploads get a 413 before they are read whole.",
    )
    receipt: bool = Field(
        default=False,
        description="Attach a receipt (usage, cost, request id) to JSON answers, under `ledger.receipt_field`.",
    )


class OpenCode(Strict):
    """What this gateway tells OpenCode about itself (`GET /.well-known/opencode`, `GET /external/opencode`).
    The provider id OpenCode shows is `gateway.name`."""

    name: str = Field(description="The provider's display name in OpenCode.")
    env: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Env var that carries the gateway key: `opencode auth login` stores the key under it, and"
        " the provider's `apiKey` is `{env:<this>}`.",
    )
    auth_command: list[str] = Field(
        min_length=1, description="argv whose stdout is the user's gateway key; `opencode auth login` runs it."
    )
    npm: str = Field(default="@ai-sdk/openai-compatible", description="The AI SDK package OpenCode loads.")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+/?$",
        description="The gateway's origin as clients reach it. Unset: `X-Forwarded-Proto`/`X-Forwarded-Host`"
        " from a reverse proxy, else the request's own scheme and host.",
    )


class RoutesSpec(Strict):
    gateway: Gateway
    headers: DiagnosticHeaders
    sanitize: Sanitize = Sanitize()
    error_rules: list[ErrorRule] = Field(
        default_factory=list, description="Applied after each provider's own rules; first match wins."
    )
    fallback: Fallback = Fallback()
    breaker: BreakerPolicy = BreakerPolicy()
    ledger: LedgerPolicy = LedgerPolicy()
    limits: Limits = Limits()
    opencode: OpenCode | None = Field(default=None, description="Needed by the OpenCode documents' routes.")
    upstream: UpstreamLimits = UpstreamLimits()
    server: ServerLimits = ServerLimits()
    routes: list[Route] = Field(min_length=1)


# --------------------------------------------------------------------------- providers/*.toml


class ProviderInfo(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    docs: str | None = Field(default=None, description="The provider's API reference this file follows.")
    wire: str = Field(description="Default wire codec, by name (e.g. `openai_chat`).")
    base_url: str = Field(pattern=r"^https?://")
    base_url_env: str | None = Field(
        default=None, pattern=r"^[A-Z][A-Z0-9_]*$", description="Env var that overrides `base_url`."
    )
    priority: int = Field(default=100, description="Lower is preferred when several providers serve one public model.")
    max_answer_mb: float | None = Field(
        default=None,
        gt=0,
        description="This provider's cap on a decoded answer; unset, routes.toml's `upstream.max_answer_mb`.",
    )
    models_dev: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="This provider's directory in models.dev (`providers/<name>/`), which `engine catalog import`"
        " refreshes its rows from; default: `id`.",
    )
    base_url_required: bool = Field(
        default=False,
        description="`base_url` is only a placeholder (each customer has their own endpoint, as on Azure): the"
        " provider is live only when `base_url_env` is set too.",
    )
    url_form: str | None = Field(
        default=None, description="The `url_forms` entry models use unless their row names another."
    )


class Setting(Strict):
    """A deployment-specific value spec templates may read as `settings.<name>` (an API version, say)."""

    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="Env var that sets it.")
    default: str = Field(description="Used while the env var is unset.")


Template = Annotated[
    str,
    Field(
        description="A sandboxed Jinja2 template over `model` (the row, plus `id` and `provider`) and `settings`,"
        " rendered once per model at start-up.",
        min_length=1,
    ),
]


class UrlForm(Strict):
    """Where a provider's models are reached: a path per wire shape, and query parameters, as templates over
    the model row (`/openai/deployments/{{ model.upstream }}/chat/completions?api-version=…`). A wire whose
    shape has no path here is never selected for the models using this form."""

    paths: dict[str, Template] = Field(
        min_length=1, description="Wire shape (`chat`, `responses`) → URL path under the base URL."
    )
    query: dict[str, Template] = Field(default_factory=dict, description="Query parameters added to every URL.")


class Auth(Strict):
    env: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$", description="Env var holding the provider key.")
    header: str = "Authorization"
    scheme: str = Field(default="Bearer", description="Prefix before the key; empty for a bare key.")
    required: bool = Field(
        default=True,
        description="False for servers that need no key (local servers): the header is sent only when the env"
        " var is set.",
    )


class Liveness(Strict):
    """When a provider serves requests. Hosted providers are live when their key is set; local servers
    (Ollama, vLLM, LM Studio) need no key and are live while they answer a cheap probe."""

    by: Literal["key", "probe"] = Field(
        default="key",
        description="`key`: live when `auth.env` is set. `probe`: live while `GET {base_url}{probe_path}`"
        " answers 2xx; probed at start-up and every `interval_seconds`.",
    )
    probe_path: str = Field(default="/models", pattern=r"^/")
    interval_seconds: float = Field(default=30.0, gt=0, description="How often a probed provider is re-checked.")
    timeout_seconds: float = Field(default=2.0, gt=0, description="A probe slower than this counts as down.")


class Timeouts(Strict):
    """Each phase of one attempt on this provider, in seconds; each expiry is its own 504 naming the phase."""

    connect: float = Field(default=10.0, gt=0, description="Opening a connection.")
    pool: float = Field(
        default=10.0, gt=0, description="Waiting for one of this provider's `[pool] connections` to come free."
    )
    read: float | None = Field(
        default=None, gt=0, description="Shorthand: the default of both `first_byte` and `idle`."
    )
    first_byte: float | None = Field(
        default=None,
        gt=0,
        description="From sending the request until the answer's first bytes (default `read`, else 300).",
    )
    idle: float | None = Field(
        default=None,
        gt=0,
        description="Longest wait for more of an answer once it began, e.g. between stream chunks (default"
        " `read`, else 300).",
    )
    total: float = Field(
        default=1800.0,
        gt=0,
        description="The whole attempt, a relayed stream included: an upstream trickling bytes is cut here.",
    )

    @property
    def first_byte_s(self) -> float:
        return self.first_byte or self.read or 300.0

    @property
    def idle_s(self) -> float:
        return self.idle or self.read or 300.0


class ConnectionPool(Strict):
    """This provider's own connections: a slow provider fills its own pool, never the others'."""

    connections: int = Field(default=100, ge=1, description="Connections open to this provider at once, at most.")


class Retry(Strict):
    """Retries of a failed attempt on this same provider, with jittered exponential backoff: the n-th retry
    waits between half and all of `min(backoff_max, backoff_initial * 2**n)`, or what the upstream's
    retry-after asks (up to routes.toml `fallback.retry_after_max`)."""

    max_retries: int = Field(default=1, ge=0, le=10, description="Retries after the first try; 0 never retries.")
    backoff_initial: float = Field(default=0.25, ge=0, description="Seconds before the first retry (at most).")
    backoff_max: float = Field(default=4.0, ge=0, description="Longest backoff between two tries, in seconds.")


class Clamp(Strict):
    min: float | None = None
    max: float | None = None


FIELD_PATH = r"^[A-Za-z_][A-Za-z0-9_-]*(\[\])?(\.[A-Za-z_][A-Za-z0-9_-]*(\[\])?)*$"
FieldPath = Annotated[str, Field(pattern=FIELD_PATH)]
PlainPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")]


class Mapping(Strict):
    """One block of field mappings.

    Within a block the steps run in this order: rename, drop, default, set, clamp, replace, compute.
    Keys are paths: dots descend into objects, `[]` applies to each element of a list
    (`messages[].name`). Blocks run in file order, each seeing the result of the ones before.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"dependentRequired": {"extensions": ["why"]}}
    )

    stage: Literal["request", "wire"] = Field(
        default="request",
        description="`request`: the OpenAI-shaped request, before the wire codec. `wire`: the provider's"
        " body, after the codec (e.g. to drop a field the codec adds).",
    )
    when: Expression | None = Field(default=None, description="Apply the block only when this holds.")
    why: str | None = Field(default=None, description="Why the provider needs this; shown in reviews.")
    rename: dict[PlainPath, PlainPath] = Field(
        default_factory=dict, description="old → new; if `new` is already set, `old` is dropped."
    )
    drop: list[FieldPath] = Field(default_factory=list)
    default: dict[FieldPath, Any] = Field(default_factory=dict, description="Set when absent.")
    set: dict[FieldPath, Any] = Field(default_factory=dict, description="Always set, overriding the client.")
    clamp: dict[FieldPath, Clamp] = Field(default_factory=dict, description="Bound numeric fields when present.")
    replace: dict[FieldPath, dict[str, Any]] = Field(
        default_factory=dict,
        description='Replace string values by table, e.g. `{ "messages[].role" = { developer = "system" } }`.',
    )
    compute: dict[FieldPath, Expression] = Field(
        default_factory=dict,
        description="Field ← expression result; a null or undefined result removes the field.",
    )
    extensions: list[FieldPath] = Field(
        default_factory=list,
        description="Fields of the provider's own that this block writes or reads, which OpenAI's request does"
        " not have (`random_seed`, `thinking`). Every other path, and every `request.*` an expression reads, must"
        " be a field of the request (`engine check`); once declared here, the provider's other blocks and rules"
        " may name it too. Needs a `why`.",
    )

    @model_validator(mode="after")
    def _extensions_say_why(self) -> Mapping:
        if self.extensions and not self.why:
            raise ValueError("a mapping that declares `extensions` needs a `why` saying whose fields they are")
        return self


class WireRule(Strict):
    when: Expression
    wire: str
    why: str = Field(description="Printed by `engine lower` when the rule fires.")


class Price(Strict):
    """What the upstream charges for a model, by the units its answers are metered in (see `Usage`)."""

    input: float = Field(default=0.0, ge=0, description="USD per million input tokens.")
    output: float = Field(default=0.0, ge=0, description="USD per million output tokens.")
    cached_input: float | None = Field(default=None, ge=0, description="USD per million prompt-cache reads.")
    cache_write: float | None = Field(
        default=None, ge=0, description="USD per million prompt-cache writes (Anthropic bills them above input)."
    )
    image: float | None = Field(default=None, ge=0, description="USD per generated image.")
    character: float | None = Field(default=None, ge=0, description="USD per million input characters (speech).")
    audio_second: float | None = Field(default=None, ge=0, description="USD per second of input audio.")
    video_second: float | None = Field(default=None, ge=0, description="USD per second of generated video.")


Modality = Literal["text", "image", "audio", "video", "pdf"]


class Modalities(Strict):
    input: list[Modality] = Field(default_factory=lambda: list[Modality](["text"]))
    output: list[Modality] = Field(default_factory=lambda: list[Modality](["text"]))


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class Thinking(Strict):
    """How OpenAI's `reasoning_effort` becomes a model's own reasoning control, for codecs whose wire has
    one (Gemini's `thinkingLevel` or `thinkingBudget`). Which knob and which values are model facts."""

    knob: str = Field(description="The wire's control, e.g. `thinkingLevel` (Gemini 3) or `thinkingBudget` (2.5).")
    effort: dict[Effort, str | int] = Field(
        min_length=1,
        description="`reasoning_effort` value → the knob's value. An effort missing here is refused with a 400"
        " that lists the ones the model takes.",
    )


class ModelFacts(Strict):
    """What a model is, whoever serves it: written once in `specs/models/<maker>/<model>.toml` and read by
    every provider row that names it in `facts` (a row's own keys win)."""

    name: str | None = Field(default=None, description="Human-readable name.")
    aliases: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]] = Field(
        default_factory=list,
        description="More public IDs the model is served under, each a first-class ID of its own (listed in"
        " /models, echoed in the diagnostic headers): e.g. the bare `gpt-5.5` clients know for `openai/gpt-5.5`."
        " Every provider row naming these facts serves them, preferred by `provider.priority`.",
    )
    tools: bool = False
    reasoning: bool = Field(default=False, description="Accepts `reasoning_effort` and reasons.")
    reasons_by_default: bool = Field(
        default=False, description="Reasons even when the request carries no `reasoning_effort`."
    )
    streaming: bool = True
    structured_output: bool = Field(default=True, description="Accepts `response_format` json_schema.")
    modalities: Modalities = Modalities()
    context: int | None = Field(default=None, gt=0, description="Context window in tokens.")
    max_output: int | None = Field(default=None, gt=0, description="Most output tokens per request.")
    price: Price | None = Field(default=None, description="The maker's list price; hosts override it in their row.")
    release_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    operations: list[ServedOperation] = Field(
        default_factory=lambda: ["chat.completions", "responses"],
        min_length=1,
        description="The operations this model serves; another one is refused with a 400 naming these.",
    )
    dimensions: int | None = Field(default=None, gt=0, description="Embedding models: the vector's length.")
    adjustable_dimensions: bool = Field(
        default=False, description="Embedding models: accepts `dimensions` (up to `dimensions`) to shorten vectors."
    )
    thinking: Thinking | None = Field(
        default=None, description="How `reasoning_effort` is lowered, for wires with their own reasoning control."
    )
    models_dev: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="The models.dev entry `engine catalog import` refreshes these facts from:"
        " `<provider>/<model id>` (providers/<provider>/models/<model id>.toml). A facts file without one is"
        " not refreshed; a row without one is refreshed from `<provider.models_dev>/<upstream>`.",
    )


class SchemaRules(Strict):
    """How JSON Schemas in a request (tool parameters, `response_format`) are rewritten for a provider that
    accepts only part of JSON Schema. Steps, in order: local `$ref`s are inlined, `allOf` is merged into
    its parent, `const` becomes a one-value `enum`, then every keyword not in `keep` is removed."""

    why: str = Field(description="What the provider refuses; shown in reviews.")
    keep: list[str] = Field(min_length=1, description="The JSON Schema keywords the provider accepts.")
    inline_refs: bool = Field(default=True, description="Replace local `$ref`s by what they point to.")
    merge_all_of: bool = Field(default=True, description="Fold `allOf` subschemas into the schema holding them.")
    const_to_enum: bool = Field(default=True, description="`const: x` becomes `enum: [x]`.")


class ModelRow(ModelFacts):
    upstream: str = Field(description="The model name the provider expects on its wire (on Azure, the deployment).")
    priority: int | None = Field(
        default=None,
        description="This provider's place among the candidates for this model (lower first); default its"
        " `provider.priority`.",
    )
    weight: float | None = Field(
        default=None,
        gt=0,
        description="Among candidates of equal priority that set weights, each request picks the order at"
        " random in proportion to them (so traffic splits by weight); unweighted ones come after.",
    )
    url_form: str | None = Field(default=None, description="The provider's `url_forms` entry this model uses.")
    facts: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Shared facts this row starts from: `<maker>/<model>` names specs/models/<maker>/<model>.toml.",
    )


AnswerPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*(\[\])?(\.([A-Za-z_][A-Za-z0-9_-]*(\[\])?|\*))*$")]


class AnswerError(Strict):
    """A 200 answer (or stream chunk) that is really a refusal, recognized by a value in it. It becomes an
    upstream error with this status, code and message, then goes through the error rules like any other."""

    name: str = Field(description="Short identifier, shown by `engine lower --error`.")
    why: str | None = None
    when_true: AnswerPath = Field(
        description="Holds when any value at this path is `true`; `[]` walks a list's elements, `*` an"
        " object's values (`prompt_filter_results[].content_filter_results.*.filtered`)."
    )
    status: int = Field(default=400, ge=400, le=599)
    type: str | None = None
    code: str | None = None
    message: str = Field(description="The upstream error's message (the error rules may still replace it).")


class ContentPart(Strict):
    """One type of typed content part a provider answers with, and which chat field its text joins."""

    into: Literal["content", "reasoning_content"] = Field(description="The chat field the part's text joins.")
    text: AnswerPath = Field(
        description="Where the part's text is, inside the part (`text`; `thinking[].text` for a list of texts)."
    )


class Answers(Strict):
    """What a provider adds to its answers, handled before the wire codec raises them: fields removed from
    JSON bodies and from every stream chunk, the answers that are refusals, and content that comes as a
    list of typed parts where OpenAI's clients expect text."""

    why: str | None = None
    drop: list[FieldPath] = Field(default_factory=list, description="Paths removed from every answer and chunk.")
    errors: list[AnswerError] = Field(default_factory=list)
    content_parts: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")], ContentPart] = Field(
        default_factory=dict,
        description="A chat answer whose `choices[].message.content` (or a stream chunk's `choices[].delta.content`)"
        " is a list of typed parts: each part type listed here → the field its text joins, in order (e.g."
        " `thinking` parts → `reasoning_content`, `text` parts → `content`). Parts of other types are dropped;"
        " a content that is already a string passes as it is.",
    )


class ProviderSpec(Strict):
    provider: ProviderInfo
    auth: Auth
    liveness: Liveness = Liveness()
    timeouts: Timeouts = Timeouts()
    pool: ConnectionPool = ConnectionPool()
    retry: Retry = Retry()
    headers: dict[str, str] = Field(default_factory=dict, description="Static headers sent upstream.")
    settings: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], Setting] = Field(default_factory=dict)
    url_forms: dict[str, UrlForm] = Field(
        default_factory=dict,
        description="Named URL forms; without any, the wire's own path is appended to the base URL.",
    )
    profiles: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]] = Field(
        default_factory=list,
        description="Shared rule sets (`specs/profiles/<name>.toml`) this provider follows: their mappings run"
        " before the provider's own, their wire and error rules are tried after the provider's own.",
    )
    mappings: list[Mapping] = Field(default_factory=list)
    wire_rules: list[WireRule] = Field(
        default_factory=list, description="Ordered; the first rule that holds picks the wire."
    )
    error_rules: list[ErrorRule] = Field(default_factory=list)
    answers: Answers = Answers()
    finish_reasons: dict[str, Literal["stop", "length", "tool_calls", "content_filter"]] = Field(
        default_factory=dict,
        description="The upstream's finish reasons → OpenAI's, for codecs that translate them. `stop` with tool"
        " calls is raised as `tool_calls`; `content_filter` answers with the content-filter error (through"
        " `error_rules`). Unlisted reasons are raised as `stop`.",
    )
    schemas: SchemaRules | None = Field(
        default=None, description="Rewrite request JSON Schemas into the subset this provider accepts."
    )
    models: dict[str, ModelRow] = Field(min_length=1, description="Public model ID → its row.")


class ProfileSpec(Strict):
    """How an API behaves whoever hosts it (`specs/profiles/<name>.toml`): rules written once and followed by
    every provider that lists the profile, e.g. OpenAI's API as served by OpenAI and by Azure OpenAI."""

    description: str = Field(description="What the profile is, and who follows it.")
    mappings: list[Mapping] = Field(default_factory=list)
    wire_rules: list[WireRule] = Field(default_factory=list)
    error_rules: list[ErrorRule] = Field(default_factory=list)
