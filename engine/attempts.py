"""Attempts: which upstream attempt runs next after one fails, decided in one place.

Sending and raising never decide whether to try again: they report a typed `Failure` (what went wrong,
whether the request reached the provider, the upstream's status, code and retry-after) on the
`GatewayError` they raise. `Policy.decide` turns a failure into one of three steps, from routes.toml's
`[fallback]` and the provider's `[retry]`:

- RETRY the same provider after a jittered exponential backoff (or the upstream's retry-after): the
  connection was refused or timed out before the request was sent, or the upstream answered 5xx, 408,
  409 or 429, and the provider's retries are not used up;
- NEXT: move on to the next candidate provider (retries used up, a quota error, a retry-after longer
  than the cap, or a timeout after sending where routes.toml says that is safe);
- STOP: answer this error (a 4xx that is the request's fault, a timeout after sending, a broken answer).

`run` is the loop. It only ever sees whole attempts: once an attempt returns a response (a stream
included) it is the answer, so nothing is retried after the first byte went to the client. Waiting uses
the event loop's clock (`asyncio.sleep`), so tests drive it with a virtual clock in milliseconds.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn, Protocol, TypeVar

from engine.errors import Failure, GatewayError, Kind
from engine.health import Circuit, Health
from engine.health import unavailable as health_unavailable
from engine.spec.models import DiagnosticHeaders, Fallback, Retry
from engine.timeouts import CALLER

log = logging.getLogger("engine.attempts")

# Failures that happened before the request reached the provider: always safe to try again.
_NOT_SENT = frozenset({Kind.REFUSED, Kind.CONNECT_TIMEOUT, Kind.POOL_TIMEOUT})
# Sent, then nothing usable came back: safe to try elsewhere only where routes.toml says so.
_SENT_NO_ANSWER = frozenset({Kind.FIRST_BYTE_TIMEOUT, Kind.DROPPED})


class Step(Enum):
    RETRY = "retry"  # the same provider, after `Decision.delay`
    NEXT = "next"  # the next candidate provider
    STOP = "stop"  # answer this failure


@dataclass(frozen=True)
class Decision:
    step: Step
    why: str
    delay: float = 0.0


class Policy:
    """routes.toml `[fallback]`, compiled: the decision for a failed attempt, and how long to wait."""

    def __init__(self, fallback: Fallback, rng: random.Random | None = None) -> None:
        self.fallback = fallback
        self.max_providers = fallback.max_providers
        self._on_status = frozenset(fallback.on_status)
        self._exhausted = frozenset(fallback.exhausted_codes)
        self._rng = rng or random.Random()
        self._after_headers = tuple(fallback.retry_after_headers.items())

    def decide(self, failure: Failure | None, retry: Retry, retries: int) -> Decision:
        """`retries`: how often this provider was already retried for this request."""
        if failure is None:
            return Decision(Step.STOP, "not an upstream failure")
        kind = failure.kind
        if kind is Kind.STATUS:
            if failure.status not in self._on_status:
                return Decision(Step.STOP, f"HTTP {failure.status} is not retried")
            if failure.code in self._exhausted:
                return Decision(Step.NEXT, f"{failure.code}: out of quota there")
            wait = failure.retry_after
            cap = self.fallback.retry_after_max
            if wait is not None and wait > cap:
                return Decision(Step.NEXT, f"asked to wait {wait:g} s, over the {cap:g} s cap")
        elif kind in _NOT_SENT:
            if not self.fallback.on_unreachable:
                return Decision(Step.STOP, f"{kind}: fallback.on_unreachable is off")
            wait = None
        elif kind in _SENT_NO_ANSWER:
            if self.fallback.on_timeout:
                return Decision(Step.NEXT, f"{kind} after sending; fallback.on_timeout allows another provider")
            return Decision(Step.STOP, f"{kind} after sending: the provider may have done the work")
        else:
            return Decision(Step.STOP, f"{kind} is not retried")
        what = f"HTTP {failure.status}" if kind is Kind.STATUS else kind.value
        if retries >= retry.max_retries:
            return Decision(Step.NEXT, f"{what} and {retries} of {retry.max_retries} retries used")
        delay = wait if wait is not None else self.backoff(retry, retries)
        return Decision(Step.RETRY, f"{what}; retry {retries + 1} of {retry.max_retries}", delay)

    def backoff(self, retry: Retry, n: int) -> float:
        """Before retry n (0-based): a uniform pick in [ceiling/2, ceiling], ceiling doubling up to the max."""
        ceiling = min(retry.backoff_max, retry.backoff_initial * 2.0**n)
        return ceiling / 2 + self._rng.random() * ceiling / 2

    def retry_after(self, headers: Mapping[str, str]) -> float | None:
        """Seconds an upstream asked us to wait, from the first of routes.toml's retry-after headers present."""
        for name, unit in self._after_headers:
            value = headers.get(name)
            if value is not None:
                seconds = _seconds(value.strip(), unit)
                if seconds is not None:
                    return seconds
        return None


def _seconds(value: str, unit: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        if unit != "s":
            return None
        try:  # `retry-after` may be an HTTP date
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    if number != number or number < 0:  # NaN or negative: ignored
        return None
    return number / 1000 if unit == "ms" else number


def _time_left() -> float | None:
    """Seconds until the caller's deadline (routes.toml `gateway.deadline_header`), if it set one."""
    caller = CALLER.get()
    if caller is None or caller.deadline is None:
        return None
    return caller.deadline - asyncio.get_running_loop().time()


async def _pause(seconds: float) -> None:
    """A backoff: the caller's disconnect is listened for meanwhile, so a client that leaves ends it."""
    caller = CALLER.get()
    if caller is not None:
        caller.listen()
    await asyncio.sleep(seconds)


class Answer(Protocol):
    @property
    def headers(self) -> MutableMapping[str, Any]: ...


R = TypeVar("R", bound=Answer)
P = TypeVar("P")


@dataclass
class Trail:
    """How an answer was obtained: attempts made and providers moved on from (for the diagnostic headers)."""

    attempts: int = 0
    failed: list[str] = field(default_factory=list)

    def stamp(self, names: DiagnosticHeaders, headers: MutableMapping[str, Any]) -> None:
        if names.attempts:
            headers[names.attempts] = str(self.attempts)
        if names.fallback_from and self.failed:
            headers[names.fallback_from] = ",".join(self.failed)


async def run(
    policy: Policy,
    health: Health,
    names: DiagnosticHeaders,
    public_id: str,
    candidates: Sequence[tuple[str, Retry, Callable[[], P]]],
    attempt: Callable[[P], Awaitable[R]],
) -> R:
    """Try `candidates` in order, each `(provider id, its retry table, prepare)`, until one answers.

    A candidate whose circuit is open is skipped, and so is one whose `prepare` refuses (a capability the
    provider lacks); a skip is not an attempt. The preferred provider's refusal is the answer, though, and
    when every candidate's circuit is open the answer is a 503 saying when to retry.
    """
    trail = Trail()
    last: GatewayError | None = None
    last_provider = ""
    providers = 0
    loop = asyncio.get_running_loop()
    shut: list[float] = []  # seconds until each skipped open circuit lets a probe through
    for provider, retry, prepare in candidates:
        if providers == policy.max_providers:
            break
        breaker = health.breaker(provider)
        if not breaker.admit(loop.time()):
            shut.append(breaker.retry_in(loop.time()))
            continue
        probe = breaker.state is Circuit.HALF_OPEN
        try:
            prepared = prepare()
        except GatewayError:
            breaker.released(probe)
            if last is None and providers == 0 and not shut:
                raise
            continue
        providers += 1
        retries = 0
        while True:
            trail.attempts += 1
            try:
                answer = await attempt(prepared)
            except GatewayError as error:
                failure = error.failure
                if failure is None:
                    breaker.released(probe)
                else:
                    breaker.failed(loop.time(), failure, probe)
                decision = policy.decide(failure, retry, retries)
                left = _time_left()
                step, why = decision.step, decision.why
                if step is Step.RETRY and breaker.state is not Circuit.CLOSED:
                    step, why = Step.NEXT, f"{why}, but its circuit opened"
                elif step is Step.RETRY and left is not None and decision.delay >= left:
                    step, why = Step.NEXT, f"{why}, but the deadline is {max(left, 0):.3f} s away"
                if failure is not None:
                    log.warning("attempt %d (%s): %s → %s", trail.attempts, provider, why, step.value)
                if step is Step.STOP:
                    trail.stamp(names, error.headers)
                    raise
                last, last_provider = error, provider
                if left is not None and left <= 0:
                    return _answer_with(trail, names, last, provider)  # the caller's deadline has passed
                if step is Step.RETRY:
                    retries += 1
                    await _pause(decision.delay)
                    continue
                trail.failed.append(provider)
                break
            except BaseException:
                breaker.released(probe)  # cancelled (the client left): no outcome
                raise
            breaker.succeeded(loop.time())
            trail.stamp(names, answer.headers)
            return answer
    if last is None:
        raise health_unavailable(public_id, min(shut))
    return _answer_with(trail, names, last, last_provider)


def _answer_with(trail: Trail, names: DiagnosticHeaders, error: GatewayError, provider: str) -> NoReturn:
    """Nothing more to try: `error` (the last failure, from `provider`) is the answer."""
    if trail.failed and trail.failed[-1] == provider:
        trail.failed.pop()  # its own failure is the answer: it did not fail "first"
    trail.stamp(names, error.headers)
    raise error
