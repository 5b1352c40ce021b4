"""Public model IDs as clients send them: the bare IDs users know (`gpt-5.5`) are first-class aliases of the
catalog's `<maker>/<model>` IDs, served by every provider whose row names the model's facts, preferred in
the order the specs declare, and only by providers that are configured on this gateway."""

from __future__ import annotations

import pytest

from engine.catalog import Catalog
from engine.errors import GatewayError
from engine.spec.loader import load_specs
from tests.conftest import SPECS

SHIPPED = load_specs(SPECS)
AZURE = {"AZURE_OPENAI_API_KEY": "azure-key-0000", "AZURE_OPENAI_ENDPOINT": "https://acme.openai.azure.com"}
OPENAI = {"OPENAI_API_KEY": "sk-test-000000"}


def catalog(**env: str) -> Catalog:
    return Catalog.from_specs(SHIPPED, env=env)


def test_the_bare_id_is_served_by_azure_when_azure_is_live() -> None:
    candidates = catalog(**AZURE, **OPENAI).resolve_all("gpt-5.5")
    assert [c.provider.id for c in candidates] == ["azure", "openai"]  # azure.toml's priority is lower
    assert candidates[0].public_id == "gpt-5.5" and candidates[0].row.upstream == "gpt-5.5"


def test_the_vendor_prefixed_id_is_the_same_model() -> None:
    assert [c.provider.id for c in catalog(**AZURE, **OPENAI).resolve_all("openai/gpt-5.5")] == ["azure", "openai"]


def test_providers_without_credentials_are_skipped() -> None:
    assert [c.provider.id for c in catalog(**OPENAI).resolve_all("gpt-5.5")] == ["openai"]


def test_azure_needs_its_endpoint_as_well_as_its_key() -> None:
    keyed_only = catalog(AZURE_OPENAI_API_KEY="azure-key-0000", **OPENAI)
    assert [c.provider.id for c in keyed_only.resolve_all("gpt-4.1")] == ["openai"]


def test_every_id_is_listed_once_however_many_providers_serve_it() -> None:
    ids = list(catalog(**AZURE, **OPENAI).live_models())
    assert len(ids) == len(set(ids))
    assert {"gpt-5.5", "openai/gpt-5.5", "gpt-4.1", "openai/gpt-4.1"} <= set(ids)


def test_a_cataloged_model_without_a_live_provider_says_so() -> None:
    with pytest.raises(GatewayError) as caught:
        catalog().resolve("gpt-5.5")
    error = caught.value
    assert error.status == 404 and error.param == "model"
    assert "no provider serving it is configured on this gateway" in error.message
    assert "azure" not in error.message and "openai" not in error.message.replace("`", " ").split()


def test_an_unknown_model_still_does_not_exist() -> None:
    with pytest.raises(GatewayError) as caught:
        catalog(**OPENAI).resolve("gpt-0-nonexistent")
    assert caught.value.status == 404 and "does not exist" in caught.value.message
