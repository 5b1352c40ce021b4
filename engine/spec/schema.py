"""The published JSON Schemas of the spec files, generated from the pydantic models.

`specs/schema/*.schema.json` are committed so editors (taplo, Even Better TOML) can validate a provider
file as it is typed; `engine schema` rewrites them and a test fails when they drift from the models.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from engine.spec.models import ModelFacts, ProfileSpec, ProviderSpec, RoutesSpec

PUBLISHED: dict[str, type[BaseModel]] = {
    "routes.schema.json": RoutesSpec,
    "provider.schema.json": ProviderSpec,
    "model.schema.json": ModelFacts,
    "profile.schema.json": ProfileSpec,
}


@cache
def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render(model: type[BaseModel]) -> str:
    return json.dumps(schema_for(model), indent=2, sort_keys=True) + "\n"


def publish(directory: Path) -> list[Path]:
    """Write every published schema into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, model in PUBLISHED.items():
        path = directory / filename
        path.write_text(render(model))
        written.append(path)
    return written
