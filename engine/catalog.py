"""Resolve model: public model ID → the provider and upstream model that will serve it.

The catalog is the union of the models in every provider spec, under their public IDs and their aliases
(`gpt-5.5` for `openai/gpt-5.5`): one ID, many candidates, preferred by `provider.priority`.
A provider is *live* when its key is in the environment, or, for the local servers whose spec says
`liveness.by = "probe"`, while it answers its probe (`engine.liveness` keeps that current); only live
providers serve requests, and `/models` lists only models with a live provider. Everything a request
needs from a spec is compiled here once, per (provider, model) candidate: mappings and wire rules whose
conditions read only the model are decided at start-up.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from engine.answers import AnswerFilter
from engine.error_rules import CompiledErrorRule, compile_error_rules
from engine.errors import GatewayError, model_not_configured, model_not_found
from engine.mapping import CompiledMapping
from engine.rules import Expression, Template, compile_expression, compile_template
from engine.spec.loader import REQUEST_NAMES, TEMPLATE_NAMES, Specs
from engine.spec.models import ModelRow, ProviderSpec, UrlForm
from engine.wires import WIRES
from engine.wires.base import Wire


@dataclass(frozen=True)
class CompiledWireRule:
    when: Expression | None  # None: decided true for this model at start-up
    wire: Wire
    why: str


@dataclass
class Answering:
    """Whether a probed provider answered its last probe (the one mutable bit of a bound provider)."""

    ok: bool = False


@dataclass(frozen=True)
class Provider:
    """A provider spec bound to this process's environment."""

    spec: ProviderSpec
    id: str
    base_url: str
    api_key: str | None
    wire: Wire
    mappings: tuple[CompiledMapping, ...]
    wire_rules: tuple[tuple[int, CompiledWireRule], ...]
    error_rules: tuple[CompiledErrorRule, ...]
    settings: dict[str, str] = field(default_factory=dict)  # `settings.*` as this environment sets them
    url_forms: dict[str, CompiledUrlForm] = field(default_factory=dict)
    endpoint_set: bool = True  # False while a required base URL (`base_url_required`) is unset
    answers: AnswerFilter | None = None  # the spec's `[answers]`, when it has any
    answering: Answering = field(default_factory=Answering, compare=False)
    _headers: dict[tuple[str | None, str], dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def probed(self) -> bool:
        """Live while it answers (a local server), rather than when its key is set."""
        return self.spec.liveness.by == "probe"

    @property
    def live(self) -> bool:
        return (self.answering.ok if self.probed else bool(self.api_key)) and self.endpoint_set

    def urls_for(self, row: ModelRow, view: dict[str, Any]) -> dict[str, str] | None:
        """Wire shape → the full URL (query included) for this model, from its URL form; None without forms."""
        name = row.url_form or self.spec.provider.url_form
        if name is None:
            return None
        return self.url_forms[name].render(self.base_url, {"model": view, "settings": self.settings})

    def auth_headers(self, redacted: bool = False) -> dict[str, str]:
        """The credential header; redacted (or not live) it shows where the key goes, not the key.
        A provider whose key is optional gets no header at all while its key is unset."""
        auth = self.spec.auth
        if not self.api_key and not auth.required:
            return {}
        key = "[redacted]" if redacted else self.api_key or f"${{{auth.env}}}"
        return {auth.header: f"{auth.scheme} {key}" if auth.scheme else key}

    def request_headers(self, content_type: str | None, accept: str) -> dict[str, str]:
        """The headers of every request with this content type and `accept`: the spec's own, then the
        credential. Built once per pair (nothing here depends on the request), so `content_type` is one of a
        few fixed values, never a multipart boundary; callers get their own copy."""
        headers = self._headers.get((content_type, accept))
        if headers is None:
            headers = {"content-type": content_type} if content_type else {}
            headers["accept"] = accept
            headers.update(self.spec.headers)
            headers.update(self.auth_headers())
            self._headers[(content_type, accept)] = headers
        return dict(headers)

    @classmethod
    def bind(cls, spec: ProviderSpec, env: Mapping[str, str]) -> Provider:
        info = spec.provider
        configured = env.get(info.base_url_env) if info.base_url_env else None
        base_url = configured or info.base_url
        rules = tuple(
            (i, CompiledWireRule(compile_expression(r.when, REQUEST_NAMES), WIRES[r.wire], r.why))
            for i, r in enumerate(spec.wire_rules)
        )
        return cls(
            spec=spec,
            id=info.id,
            base_url=base_url.rstrip("/"),
            api_key=env.get(spec.auth.env) or None,
            wire=WIRES[info.wire],
            mappings=tuple(CompiledMapping.compile(m) for m in spec.mappings),
            wire_rules=rules,
            error_rules=compile_error_rules(spec.error_rules),
            settings={name: env.get(setting.env) or setting.default for name, setting in spec.settings.items()},
            url_forms={name: CompiledUrlForm.compile(form) for name, form in spec.url_forms.items()},
            endpoint_set=bool(configured) or not info.base_url_required,
            answers=AnswerFilter.compile(spec.answers),
        )


@dataclass(frozen=True)
class CompiledUrlForm:
    paths: tuple[tuple[str, Template], ...]
    query: tuple[tuple[str, Template], ...]

    @classmethod
    def compile(cls, form: UrlForm) -> CompiledUrlForm:
        def compiled(table: dict[str, str]) -> tuple[tuple[str, Template], ...]:
            return tuple((k, compile_template(v, TEMPLATE_NAMES)) for k, v in table.items())

        return cls(compiled(form.paths), compiled(form.query))

    def render(self, base_url: str, names: dict[str, Any]) -> dict[str, str]:
        query = urlencode({k: t.render(**names) for k, t in self.query})
        return {shape: base_url + t.render(**names) + (f"?{query}" if query else "") for shape, t in self.paths}


@dataclass(frozen=True)
class Plan:
    """What a candidate's spec asks of one operation, with everything the model and operation decide
    already folded away (see `Expression.specialize`): only request-dependent conditions remain."""

    mappings: tuple[CompiledMapping, ...]
    wire_rules: tuple[tuple[int, CompiledWireRule], ...]
    request_stage: tuple[CompiledMapping, ...] = ()  # `mappings` split by stage, in spec order
    wire_stage: tuple[CompiledMapping, ...] = ()

    @classmethod
    def of(cls, mappings: tuple[CompiledMapping, ...], wire_rules: tuple[tuple[int, CompiledWireRule], ...]) -> Plan:
        return cls(
            mappings,
            wire_rules,
            tuple(m for m in mappings if m.stage == "request"),
            tuple(m for m in mappings if m.stage == "wire"),
        )


@dataclass(frozen=True)
class Candidate:
    """One way to serve a public model: a provider and its row for the model."""

    public_id: str
    provider: Provider
    row: ModelRow
    view: dict[str, Any]  # what spec expressions see as `model`
    serves: frozenset[str]  # the operations the row serves
    urls: dict[str, str] | None = None  # wire shape → URL, when the provider declares URL forms
    _plans: dict[str, Plan] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, public_id: str, provider: Provider, row: ModelRow) -> Candidate:
        view = {"id": public_id, "provider": provider.id, **row.model_dump()}
        return cls(public_id, provider, row, view, frozenset(row.operations), provider.urls_for(row, view))

    def plan(self, operation: str) -> Plan:
        """The specialized spec for `operation`, built on first use and kept (`Catalog.prepare` warms it)."""
        plan = self._plans.get(operation)
        if plan is None:
            plan = self._plans[operation] = self._specialize(operation)
        return plan

    def _specialize(self, operation: str) -> Plan:
        known = {"model": self.view, "operation": operation}
        mappings = tuple(m for m in (m.specialized(**known) for m in self.provider.mappings) if m is not None)
        rules: list[tuple[int, CompiledWireRule]] = []
        for index, rule in self.provider.wire_rules:
            when = rule.when.specialize(**known) if rule.when is not None else True
            if when is False or (self.urls is not None and rule.wire.shape not in self.urls):
                continue  # decided false here, or a wire this model's URL form has no path for
            rules.append((index, CompiledWireRule(None if when is True else when, rule.wire, rule.why)))
            if when is True:
                break  # always fires here: later rules can never be reached
        return Plan.of(mappings, tuple(rules))


class Catalog:
    def __init__(self, providers: list[Provider]) -> None:
        self.providers = {p.id: p for p in providers}
        by_model: dict[str, list[Candidate]] = {}
        for provider in sorted(providers, key=lambda p: p.spec.provider.priority):
            for public_id, row in provider.spec.models.items():
                for served_as in (public_id, *row.aliases):
                    by_model.setdefault(served_as, []).append(Candidate.build(served_as, provider, row))
        for candidates in by_model.values():  # stable: equal priorities keep the provider order
            candidates.sort(key=_priority)
        self._all = by_model
        self._weighted = frozenset(m for m, cs in by_model.items() if any(c.row.weight for c in cs))
        self._live: dict[str, list[Candidate]] = {}
        self._rng = random.Random()
        self.refresh()

    def refresh(self) -> None:
        """Recompute which models have a live provider (after a probe changed a provider's state)."""
        self._live = {
            model: live
            for model, candidates in self._all.items()
            if (live := [c for c in candidates if c.provider.live])
        }

    def probed_providers(self) -> list[Provider]:
        return [p for p in self.providers.values() if p.probed]

    @classmethod
    def from_specs(cls, specs: Specs, env: Mapping[str, str] | None = None) -> Catalog:
        env = os.environ if env is None else env
        return cls([Provider.bind(f.spec, env) for f in specs.providers])

    def prepare(self, operations: list[str]) -> None:
        """Specialize every candidate that is or may become live for these operations now, not on first request."""
        for candidates in self._all.values():
            for candidate in candidates:
                if candidate.provider.live or candidate.provider.probed:
                    for operation in operations:
                        candidate.plan(operation)

    def public_ids(self) -> list[str]:
        """Every public model ID some spec serves, live or not."""
        return list(self._all)

    def live_models(self) -> dict[str, list[Candidate]]:
        return self._live

    def live_providers(self) -> list[Provider]:
        return [p for p in self.providers.values() if p.live]

    def live_candidate(self, public_id: str, provider: str) -> Candidate | None:
        """The live candidate of this exact provider (a job stays with the provider that runs it)."""
        return next((c for c in self._live.get(public_id, ()) if c.provider.id == provider), None)

    def all_candidates(self, public_id: str) -> list[Candidate]:
        return self._all.get(public_id, [])

    def resolve(self, public_id: str) -> Candidate:
        """The preferred live candidate, or a 404 (see `resolve_all`)."""
        return self.resolve_all(public_id)[0]

    def resolve_all(self, public_id: str) -> list[Candidate]:
        """Every live candidate, preferred first (the fallback order). A 404 otherwise, which says whether
        the model is unknown or only unserved here, without naming the providers that would serve it."""
        candidates = self._live.get(public_id)
        if not candidates:
            raise model_not_configured(public_id) if public_id in self._all else model_not_found(public_id)
        if public_id in self._weighted:
            return weighted_order(candidates, self._rng)
        return candidates


def _priority(candidate: Candidate) -> int:
    row = candidate.row
    return row.priority if row.priority is not None else candidate.provider.spec.provider.priority


def weighted_order(candidates: list[Candidate], rng: random.Random) -> list[Candidate]:
    """Within each run of equal priority, weighted candidates in a random order drawn in proportion to their
    weights (each keyed by u ** (1 / weight), largest first), then the unweighted ones as listed."""
    ordered: list[Candidate] = []
    for _, group in itertools.groupby(candidates, key=_priority):
        members = list(group)
        weighted = sorted(
            (c for c in members if c.row.weight), key=lambda c: rng.random() ** (1 / (c.row.weight or 1)), reverse=True
        )
        ordered += weighted + [c for c in members if not c.row.weight]
    return ordered


def check_capabilities(request: dict[str, Any], candidate: Candidate) -> None:
    """Refuse, before any upstream call, a request that needs what the model's row says it lacks.
    Checked in this order, each only as far as it must (the first refusal is the answer)."""
    row = candidate.row
    if request.get("tools") and not row.tools:
        raise _lacks(candidate, "tools", "does not support tools; remove `tools`")
    if request.get("stream") and not row.streaming:
        raise _lacks(candidate, "stream", "does not support streaming; send `stream: false`")
    if not row.reasoning and request.get("reasoning_effort") not in (None, "none"):
        raise _lacks(candidate, "reasoning_effort", "is not a reasoning model; remove `reasoning_effort`")
    if not row.structured_output:
        response_format = request.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            raise _lacks(
                candidate,
                "response_format",
                "does not support `response_format` of type `json_schema`; use `json_object`",
            )
    if "image" not in row.modalities.input and _has_part(request, "image_url"):
        raise _lacks(candidate, "messages", "does not accept image input; remove the `image_url` parts")


def _lacks(candidate: Candidate, param: str, what: str) -> GatewayError:
    return GatewayError(
        400,
        f"The model `{candidate.public_id}` {what}, or pick a model that has it.",
        param=param,
        code="unsupported_parameter",
    )


def _has_part(request: dict[str, Any], part_type: str) -> bool:
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == part_type for p in content):
            return True
    return False
