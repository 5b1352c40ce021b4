"""Load and check the spec directory: `routes.toml` and `providers/*.toml`.

Checking happens in three passes, each reporting every problem with the file and the key it sits at:
1. each file against its published JSON Schema (shape, types, unknown keys);
2. expressions compile and read only the names their place offers, and only fields of those names; mapping
   paths are fields of the request (`engine/spec/names.py`). This pass reads the TOML as written, so it runs
   on a file whose schema check failed too: one run reports every problem of every kind;
3. cross-file facts: unique provider ids, wires that exist, model facts that exist.

Profiles (`profiles/<name>.toml`) are rules an API follows whoever hosts it (OpenAI's, on OpenAI and on
Azure): a provider that lists one gets its mappings before its own, and its wire and error rules after.
Model facts (`models/<maker>/<model>.toml`) are what a model is whoever serves it; a provider row that
names them in `facts` starts from them and overrides what it states itself, so a context window or a
capability is written once even when several providers serve the model.
Nothing here looks at the environment: a spec is valid or not regardless of which keys are set.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError

from engine.rules import ExpressionError, compile_template
from engine.spec import names
from engine.spec.models import ModelFacts, ProfileSpec, ProviderSpec, RoutesSpec, operation_needs_key, operation_row
from engine.spec.names import ERROR_NAMES, REQUEST_NAMES, format_key
from engine.spec.schema import schema_for
from engine.wires import WIRES
from engine.wires.base import NoCodec, codec_for

M = TypeVar("M", bound=BaseModel)
__all__ = ["ERROR_NAMES", "REQUEST_NAMES", "TEMPLATE_NAMES", "SpecError", "Specs", "format_key", "load_specs"]
TEMPLATE_NAMES = frozenset({"model", "settings"})


class SpecError(Exception):
    """One or more problems in the spec directory; `str()` lists them, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ProviderFile:
    path: Path
    spec: ProviderSpec


@dataclass(frozen=True)
class FactsFile:
    path: Path
    id: str  # `<maker>/<model>`, from the path under models/
    facts: ModelFacts


@dataclass(frozen=True)
class Specs:
    root: Path
    routes: RoutesSpec
    providers: tuple[ProviderFile, ...]
    facts: tuple[FactsFile, ...] = ()


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    return None


def _schema_problems(path: Path, data: dict[str, Any], model: type[BaseModel]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_for(model))
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{path}: {format_key(e.absolute_path)}: {e.message}" for e in errors]


def _parse(path: Path, data: dict[str, Any], model: type[M], problems: list[str]) -> M | None:
    found = _schema_problems(path, data, model)
    if found:
        problems.extend(found)
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:  # the schema should have caught it; report it the same way
        problems.extend(f"{path}: {format_key(e['loc'])}: {e['msg']}" for e in exc.errors())
        return None


def _pattern_problems(path: Path, spec: ProviderSpec | RoutesSpec | ProfileSpec) -> list[str]:
    problems = []
    for i, rule in enumerate(spec.error_rules):
        for j, match in enumerate(rule.match):
            if match.message is None:
                continue
            try:
                re.compile(match.message)
            except re.error as exc:
                key = f"error_rules[{i}].match[{j}].message"
                problems.append(f"{path}: {key}: not a usable regular expression: {exc}")
    return problems


def _wire_problems(path: Path, spec: ProviderSpec) -> list[str]:
    named = [("provider.wire", spec.provider.wire)]
    named += [(f"wire_rules[{i}].wire", rule.wire) for i, rule in enumerate(spec.wire_rules)]
    known = ", ".join(sorted(WIRES))
    problems = [
        f"{path}: {key}: unknown wire {wire!r}; known wires: {known}" for key, wire in named if wire not in WIRES
    ]
    default = WIRES.get(spec.provider.wire)
    if default is None:
        return problems
    for model, row in spec.models.items():
        for i, operation in enumerate(row.operations):
            try:
                codec_for(default, operation_row(operation).shape)
            except NoCodec:
                problems.append(
                    f"{path}: {format_key(['models', model, 'operations', i])}: the {default.name} wire has no"
                    f" codec for {operation!r}"
                )
    return problems


def _route_problems(path: Path, routes: RoutesSpec) -> list[str]:
    problems = []
    for i, pattern in enumerate(routes.sanitize.redact_patterns):
        try:
            re.compile(f"(?:{pattern})")
        except re.error as exc:
            problems.append(f"{path}: sanitize.redact_patterns[{i}]: not a usable regular expression: {exc}")
    seen: set[tuple[str, str]] = set()
    for i, route in enumerate(routes.routes):
        if (route.method, route.path) in seen:
            problems.append(f"{path}: routes[{i}]: {route.method} {route.path} is declared twice")
        seen.add((route.method, route.path))
        if operation_needs_key(route.operation) and route.auth != "gateway_key":
            problems.append(f'{path}: routes[{i}].auth: operation {route.operation!r} needs auth = "gateway_key"')
    tier = routes.limits.default_tier
    if tier is not None and tier not in routes.limits.tiers:
        known = ", ".join(sorted(routes.limits.tiers)) or "none defined"
        problems.append(f"{path}: limits.default_tier: no tier {tier!r} under [limits.tiers] ({known})")
        if route.operation.startswith("opencode.") and routes.opencode is None:
            problems.append(f"{path}: routes[{i}].operation: {route.operation!r} needs an [opencode] table")
        if operation_row(route.operation).resolve == "job" and len(re.findall(r"\{[^}]+\}", route.path)) != 1:
            problems.append(
                f"{path}: routes[{i}].path: operation {route.operation!r} needs one path parameter, the job id"
            )
    return problems


def _load_facts(root: Path, problems: list[str]) -> dict[str, FactsFile]:
    found: dict[str, FactsFile] = {}
    directory = root / "models"
    for path in sorted(directory.glob("*/*.toml")):
        data = _read_toml(path, problems)
        facts = None if data is None else _parse(path, data, ModelFacts, problems)
        if facts is not None:
            model_id = f"{path.parent.name}/{path.stem}"
            found[model_id] = FactsFile(path, model_id, facts)
    return found


def _with_facts(path: Path, data: dict[str, Any], facts: dict[str, FactsFile], problems: list[str]) -> dict[str, Any]:
    """The provider file with each row's `facts` folded in under the row's own keys."""
    models = data.get("models")
    if not isinstance(models, dict):
        return data
    merged: dict[str, Any] = {}
    for public_id, row in models.items():
        name = row.get("facts") if isinstance(row, dict) else None
        if isinstance(name, str):
            shared = facts.get(name)
            if shared is not None:
                row = {**shared.facts.model_dump(exclude_unset=True), **row}
            elif not (path.parent.parent / "models" / f"{name}.toml").is_file():  # else its own problems are listed
                key = format_key(["models", public_id, "facts"])
                problems.append(f"{path}: {key}: no facts file {name!r} (models/<maker>/<model>.toml)")
        merged[public_id] = row
    return {**data, "models": merged}


def _load_profiles(root: Path, problems: list[str]) -> tuple[dict[str, ProfileSpec], dict[str, dict[str, Any]]]:
    """The profiles that load, and every profile file as read (for its extensions and, when it does not load,
    so that its providers do not also report it missing). A profile's mappings may serve any operation."""
    found: dict[str, ProfileSpec] = {}
    read: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "profiles").glob("*.toml")):
        data = _read_toml(path, problems)
        if data is None:
            continue
        read[path.stem] = data
        problems += names.problems(path, data, names.scope_for(None, names.declared_extensions(data)))
        profile = _parse(path, data, ProfileSpec, problems)
        if profile is not None:
            problems += _pattern_problems(path, profile)
            found[path.stem] = profile
    return found, read


def _with_profiles(
    path: Path, data: dict[str, Any], profiles: dict[str, ProfileSpec], read: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    """The provider file with its profiles' rules folded in: mappings first (the provider's own refine them),
    wire and error rules last (the provider's own are tried first)."""
    listed = data.get("profiles")
    if not isinstance(listed, list) or not listed:
        return data
    merged = dict(data)
    for i, name in enumerate(listed):
        profile = profiles.get(name) if isinstance(name, str) else None
        if profile is None:
            if name not in read:  # one that is there but does not load has its own problems listed
                problems.append(f"{path}: profiles[{i}]: no profile {name!r} (profiles/<name>.toml)")
            continue
        shared = profile.model_dump(exclude_unset=True)
        merged["mappings"] = [*shared.get("mappings", []), *merged.get("mappings", [])]
        merged["wire_rules"] = [*merged.get("wire_rules", []), *shared.get("wire_rules", [])]
        merged["error_rules"] = [*merged.get("error_rules", []), *shared.get("error_rules", [])]
    return merged


def _url_problems(path: Path, spec: ProviderSpec) -> list[str]:
    problems = []
    forms = spec.url_forms
    named = [("provider.url_form", spec.provider.url_form)]
    named += [(format_key(["models", m, "url_form"]), row.url_form) for m, row in spec.models.items()]
    for key, chosen in named:
        if chosen is not None and chosen not in forms:
            problems.append(f"{path}: {key}: no url_forms entry {chosen!r}; declared: {', '.join(forms) or 'none'}")
    if forms and spec.provider.url_form is None:
        unset = [m for m, row in spec.models.items() if row.url_form is None]
        if unset:
            problems.append(
                f"{path}: provider.url_form: models {', '.join(unset)} name no url_form and there is no default"
            )
    shape = WIRES[spec.provider.wire].shape if spec.provider.wire in WIRES else None
    for name, form in forms.items():
        if shape is not None and shape not in form.paths:
            problems.append(f"{path}: url_forms.{name}.paths: no path for {shape!r}, the shape of provider.wire")
        templates = [(f"url_forms.{name}.paths.{k}", v) for k, v in form.paths.items()]
        templates += [(f"url_forms.{name}.query.{k}", v) for k, v in form.query.items()]
        for key, source in templates:
            try:
                compile_template(source, TEMPLATE_NAMES)
            except ExpressionError as exc:
                problems.append(f"{path}: {key}: {exc}")
            else:
                problems += names.template_problems(f"{path}: {key}", source)
                problems += [
                    f"{path}: {key}: reads settings.{n}, which `settings` does not declare"
                    for n in _settings_read(source)
                    if n not in spec.settings
                ]
    return problems


def _settings_read(source: str) -> list[str]:
    return re.findall(r"settings\.([A-Za-z_][A-Za-z0-9_]*)", source)


def _liveness_problems(path: Path, spec: ProviderSpec) -> list[str]:
    if spec.liveness.by == "key" and not spec.auth.required:
        return [f'{path}: liveness.by: a provider whose key is optional cannot be live by key; use by = "probe"']
    return []


def _scope(data: dict[str, Any], profiles: dict[str, dict[str, Any]]) -> names.Scope:
    """A provider's scope: the operations its rows serve; its own extensions and its profiles'."""
    listed = data.get("profiles")
    followed = [profiles.get(n) for n in listed if isinstance(n, str)] if isinstance(listed, list) else []
    extensions = [e for profile in followed for e in names.declared_extensions(profile)]
    return names.scope_for(names.served_operations(data), [*extensions, *names.declared_extensions(data)])


def load_specs(root: Path) -> Specs:
    """Load and check everything under `root`; raise `SpecError` listing every problem found."""
    problems: list[str] = []
    routes_path = root / "routes.toml"
    routes: RoutesSpec | None = None
    data = _read_toml(routes_path, problems)
    if data is not None:
        problems += names.problems(routes_path, data, names.scope_for(None, ()))
        routes = _parse(routes_path, data, RoutesSpec, problems)
        if routes is not None:
            problems += _pattern_problems(routes_path, routes) + _route_problems(routes_path, routes)

    facts = _load_facts(root, problems)
    profiles, profiles_read = _load_profiles(root, problems)
    providers: list[ProviderFile] = []
    provider_paths = sorted((root / "providers").glob("*.toml"))
    if not provider_paths:
        problems.append(f"{root / 'providers'}: no provider specs (*.toml) found")
    seen: dict[str, Path] = {}
    for path in provider_paths:
        own = _read_toml(path, problems)
        if own is None:
            continue
        data = _with_facts(path, own, facts, problems)
        problems += names.problems(path, own, _scope(data, profiles_read))  # whether or not the schema holds
        data = _with_profiles(path, data, profiles, profiles_read, problems)
        spec = _parse(path, data, ProviderSpec, problems)
        if spec is None:
            continue
        problems += _pattern_problems(path, spec) + _wire_problems(path, spec) + _liveness_problems(path, spec)
        problems += _url_problems(path, spec)
        if spec.provider.id in seen:
            problems.append(f"{path}: provider.id: {spec.provider.id!r} is already used by {seen[spec.provider.id]}")
        seen[spec.provider.id] = path
        providers.append(ProviderFile(path, spec))

    if routes is not None:
        shared = {rule.name for rule in routes.error_rules}
        for provider in providers:
            for i, rule in enumerate(provider.spec.error_rules):
                if rule.answer_as is not None and rule.answer_as not in shared:
                    known = ", ".join(sorted(shared))
                    problems.append(
                        f"{provider.path}: error_rules[{i}].answer_as: no routes.toml error rule"
                        f" {rule.answer_as!r}; known: {known}"
                    )
    if problems or routes is None:
        raise SpecError(problems)
    return Specs(root, routes, tuple(providers), tuple(facts.values()))
