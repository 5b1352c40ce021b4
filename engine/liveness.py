"""Liveness of local servers: Ollama, vLLM and LM Studio need no key, so "live" means "answers".

A provider whose spec says `liveness.by = "probe"` is probed with `GET {base_url}{probe_path}` at start-up
and then every `interval_seconds`; a 2xx within `timeout_seconds` makes it live, anything else (refused,
slow, an error status) takes it out of `/models` and routing until it answers again. Probes use the
gateway's one upstream client, so a test's mock transport sees them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from engine.catalog import Catalog, Provider

log = logging.getLogger("engine.liveness")


async def probe(client: httpx.AsyncClient, provider: Provider) -> bool:
    """True when the provider answers its probe with a 2xx in time."""
    spec = provider.spec.liveness
    timeout = httpx.Timeout(spec.timeout_seconds).as_dict()
    request = httpx.Request(
        "GET",
        provider.base_url + spec.probe_path,
        headers={"accept": "application/json", **provider.auth_headers()},
        extensions={"timeout": timeout},
    )
    try:
        async with asyncio.timeout(spec.timeout_seconds):
            response = await client.send(request, stream=True)
            await response.aclose()
    except (httpx.HTTPError, TimeoutError):
        return False
    return 200 <= response.status_code < 300


async def probe_all(client: httpx.AsyncClient, catalog: Catalog) -> None:
    """Probe every probed provider at once and update the catalog's live set if anything changed."""
    providers = catalog.probed_providers()
    if not providers:
        return
    results = await asyncio.gather(*(probe(client, p) for p in providers))
    changed = False
    for provider, ok in zip(providers, results, strict=True):
        if provider.answering.ok != ok:
            log.warning("local provider %s is %s", provider.id, "answering: live" if ok else "not answering: not live")
            provider.answering.ok = ok
            changed = True
    if changed:
        catalog.refresh()


class Prober:
    """The background task that keeps probed providers' liveness current."""

    def __init__(self, client: httpx.AsyncClient, catalog: Catalog, interval: float | None = None) -> None:
        self._client = client
        self._catalog = catalog
        self._interval = interval  # None: the shortest `liveness.interval_seconds` of the probed specs
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One probe round before serving (so `/models` is right from the first request), then the loop."""
        providers = self._catalog.probed_providers()
        if not providers:
            return
        await probe_all(self._client, self._catalog)
        interval = self._interval or min(p.spec.liveness.interval_seconds for p in providers)
        self._task = asyncio.get_running_loop().create_task(self._run(interval))

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await probe_all(self._client, self._catalog)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
