"""Sanitize: turn an upstream error into the error the client may see.

Order: the provider's `error_rules`, then the routes' `error_rules`; the first rule that holds decides
status, type, code, param and message. An error that arrived without an HTTP status of its own (inside a
200 answer or a stream) is matched with the status the codec gave it, or the one its type implies.
The upstream's own `type`, `code` and `param` are replaced by the gateway's (the status's default type;
code `upstream_error` for a 5xx, else none; no param) unless the rule lists them in `keep`; a kept value
must read as an identifier (`context_length_exceeded`, `messages[0].content`) and survive redaction, or it
is replaced all the same. Whatever message text survives is redacted and truncated: the provider key (also
without its prefix, in any case), the upstream base URL and its host, and anything matching
`routes.sanitize.redact_patterns` (key shapes, internal hosts) never reach a client; a message that carries
a stack trace is replaced whole. Forwarded upstream headers go through the same redaction.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from engine.catalog import Provider
from engine.error_rules import CompiledErrorRule, answering
from engine.errors import GatewayError, default_type, status_of
from engine.spec.models import ErrorRule
from engine.wires.base import UpstreamError

REDACTED = "[redacted]"
# A kept `type`, `code` or `param` must look like one: a short identifier or a JSON path into the request.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\-\[\]]{0,63}")
# Text an upstream's stack trace leaves (Python, Java/JVM, Node, Go), wherever it sits in a message.
_TRACEBACK = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\n\s+at [\w.$<>]+\(|goroutine \d+ \[|"
    r"\bat (?:async )?[\w.$<>]+ \((?:file|node):|Exception in thread",
)
_HEADER_CHARS = 256


def _key_variants(key: str) -> Iterator[str]:
    """The key, and the key without its prefix(es) (`sk-proj-abc…` → `proj-abc…`, `abc…`) while what is left
    is still long enough to be the secret part rather than a common word."""
    yield key
    rest = key
    while (cut := re.match(r"[A-Za-z]{1,12}[-_]", rest)) is not None:
        rest = rest[cut.end() :]
        if len(rest) < 12:
            break
        yield rest


def secret_literals(provider: Provider) -> list[str]:
    """Strings of this provider's that no client may see: its base URL, host and key."""
    url = urlsplit(provider.base_url)
    literals = [provider.base_url, url.netloc, url.hostname or ""]
    if provider.api_key:
        literals += _key_variants(provider.api_key)
    return sorted({s for s in literals if len(s) >= 4}, key=len, reverse=True)


@dataclass(frozen=True)
class Sanitizer:
    provider: Provider
    rules: tuple[CompiledErrorRule, ...]
    redact: re.Pattern[str]
    shared: dict[str, ErrorRule]  # the routes' rules by name, for `answer_as`
    message_chars: int = 2000

    @classmethod
    def build(
        cls,
        provider: Provider,
        shared_rules: Sequence[CompiledErrorRule],
        patterns: Sequence[str],
        message_chars: int = 2000,
    ) -> Sanitizer:
        alternatives = [re.escape(s) for s in secret_literals(provider)] + [f"(?:{p})" for p in patterns]
        redact = re.compile("|".join(alternatives), re.IGNORECASE)
        named = {c.rule.name: c.rule for c in shared_rules}
        return cls(provider, (*provider.error_rules, *shared_rules), redact, named, message_chars)

    def scrub(self, text: str) -> str:
        return self.redact.sub(REDACTED, text)

    def header(self, value: str) -> str:
        """A forwarded upstream header's value, redacted and bounded."""
        return self.scrub(value[:_HEADER_CHARS])

    def __call__(self, status: int | None, upstream: UpstreamError) -> GatewayError:
        """`status`: the upstream's HTTP error status, or None for an error reported in a 200 answer or stream."""
        return self.explain(status, upstream)[0]

    def explain(self, status: int | None, upstream: UpstreamError) -> tuple[GatewayError, str | None]:
        """The client's error, and the name of the rule that decided it (None: the safe default)."""
        if status is None or status < 400:
            status = upstream.status or status_of(upstream.code, upstream.type)
        for compiled in self.rules:
            if compiled.holds(status, upstream, self.provider.id):
                rule = answering(compiled.rule, self.shared)
                status = rule.status or status
                keep = rule.keep
                error = GatewayError(
                    status,
                    rule.message or self._message(upstream, status),
                    type=rule.type or ("type" in keep and self._kept(upstream.type)) or default_type(status),
                    code=rule.code or ("code" in keep and self._kept(upstream.code)) or None,
                    param=rule.param or ("param" in keep and self._kept(upstream.param)) or None,
                )
                return error, compiled.rule.name  # the rule that matched (it may answer as a shared one)
        code = "upstream_error" if status >= 500 else None
        return GatewayError(status, self._message(upstream, status), type=default_type(status), code=code), None

    def _kept(self, value: str | None) -> str | None:
        if value is None or not _IDENTIFIER.fullmatch(value) or self.redact.search(value):
            return None
        return value

    def _message(self, upstream: UpstreamError, status: int) -> str:
        text = upstream.message
        if not text:
            return f"The upstream provider answered HTTP {status} without an error message."
        if _TRACEBACK.search(text):
            return f"The upstream provider failed (HTTP {status}); its error text was withheld."
        text = self.scrub(text[: self.message_chars * 2])  # bound the work before the bound on the result
        if len(text) > self.message_chars:
            text = text[: self.message_chars - 1] + "…"
        return text


class HeaderForwarding:
    """routes.toml's `sanitize.forward_headers` and `request_id_headers`, compiled: the upstream headers an answer
    (success or error) passes on, redacted, and the upstream's request id under the gateway's own header name.

    Which names those are is decided once per header name, since an upstream sends the same dozen names on every
    answer; a request then decodes only the values it keeps. (A name seen for the first time is matched against
    the patterns; the memo is bounded, so an upstream inventing names cannot grow it.)"""

    _MEMO_MAX = 1024

    def __init__(self, patterns: Sequence[str], id_sources: Sequence[str], id_header: str | None) -> None:
        self._wanted = re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)", re.IGNORECASE).fullmatch
        self._sources = [s.lower() for s in id_sources] if id_header else []
        self._id_header = id_header
        self._memo: dict[bytes, tuple[str, bool, bool] | None] = {}

    def _kind(self, raw_name: bytes) -> tuple[str, bool, bool] | None:
        """(the lower-case name, forwarded, a request id source), or None for a header this answer drops."""
        name = raw_name.lower().decode("latin-1")  # ASCII-only lower-casing, as httpx does
        wanted, source = self._wanted(name) is not None, name in self._sources
        found = (name, wanted, source) if wanted or source else None
        if len(self._memo) >= self._MEMO_MAX:
            self._memo.clear()
        self._memo[raw_name] = found
        return found

    def __call__(self, headers: httpx.Headers, sanitizer: Sanitizer) -> dict[str, str]:
        memo, encoding = self._memo, headers.encoding
        kept: dict[str, str] = {}
        ids: dict[str, str] = {}
        for raw_name, raw_value in headers.raw:
            kind = memo[raw_name] if raw_name in memo else self._kind(raw_name)
            if kind is None:
                continue
            name, wanted, source = kind
            value = raw_value.decode(encoding)
            if wanted:
                kept[name] = f"{kept[name]}, {value}" if name in kept else value  # as `Headers.items()` joins repeats
            if source and value and name not in ids:
                ids[name] = value
        forwarded = {name: sanitizer.header(value) for name, value in kept.items()}
        if ids and self._id_header:
            found = next(ids[source] for source in self._sources if source in ids)
            forwarded[self._id_header] = sanitizer.header(found[:128])
        return forwarded
