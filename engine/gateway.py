"""The gateway's state for one process: specs, catalog, database, usage recorder and the upstream client,
all built once at start-up. Request handlers only read it."""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.attempts import Policy
from engine.auth import Authenticator
from engine.bounded import AnswerLimits
from engine.catalog import Catalog
from engine.error_rules import compile_error_rules
from engine.health import Health
from engine.jobs import JobStore
from engine.ledger import Recorder
from engine.limits import Gatekeeper
from engine.liveness import Prober
from engine.lower import Context
from engine.sanitize import HeaderForwarding, Sanitizer
from engine.spec.loader import Specs, load_specs
from engine.spec.models import ProviderSpec
from engine.storage import REPO_ROOT, Database, open_database, open_limiter
from engine.storage.base import Periods
from engine.timeouts import Pool, Watchdog
from engine.transport import AiohttpTransport, make_client


def default_specs_dir() -> Path:
    configured = os.environ.get("ENGINE_SPECS")
    return Path(configured) if configured else REPO_ROOT / "specs"


def _pool(spec: ProviderSpec, transport: httpx.AsyncBaseTransport | None) -> Pool:
    """A provider's own client and connection limit; a test's transport is shared by all of them."""
    connections = spec.pool.connections
    client = make_client(transport or AiohttpTransport(max_connections=connections))
    return Pool(client, connections, spec.timeouts.pool)


@dataclass
class Gateway:
    specs: Specs
    catalog: Catalog
    database: Database
    recorder: Recorder
    gatekeeper: Gatekeeper
    client: httpx.AsyncClient
    sanitizers: dict[str, Sanitizer]
    strip_fields: frozenset[str]
    context: Context  # what every operation's `prepare` reads from the gateway's settings
    jobs: JobStore  # asynchronous jobs (video), under gateway-issued ids
    authenticate: Authenticator
    forwarding: HeaderForwarding  # routes.sanitize.forward_headers and request_id_headers
    prober: Prober  # keeps local servers' liveness current
    attempts: Policy  # routes.fallback: what runs after a failed upstream attempt
    pools: dict[str, Pool]  # each provider's own connections (`[pool]`, `timeouts.pool`)
    health: Health  # each provider's circuit breaker and recent error rate
    watchdog: Watchdog  # checks the timeouts of every attempt in flight
    answer_limits: dict[str, AnswerLimits]  # per provider id: routes.toml [upstream], provider overrides

    @classmethod
    def build(
        cls,
        specs_dir: Path | None = None,
        db_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        env: dict[str, str] | None = None,
    ) -> Gateway:
        specs = load_specs(specs_dir or default_specs_dir())
        catalog = Catalog.from_specs(specs, env)
        catalog.prepare(sorted({route.operation for route in specs.routes.routes}))
        database = open_database(db_url)  # connected in startup(), on the event loop
        routes = specs.routes
        shared_rules = compile_error_rules(routes.error_rules)
        sanitizers = {
            p.id: Sanitizer.build(p, shared_rules, routes.sanitize.redact_patterns, routes.upstream.max_message_chars)
            for p in catalog.providers.values()
        }
        bounds = routes.upstream
        answer_limits = {
            p.id: AnswerLimits(
                answer_bytes=int((p.spec.provider.max_answer_mb or bounds.max_answer_mb) * 1024 * 1024),
                error_bytes=int(bounds.max_error_kb * 1024),
                message_chars=bounds.max_message_chars,
            )
            for p in catalog.providers.values()
        }
        client = make_client(transport)
        return cls(
            specs=specs,
            catalog=catalog,
            database=database,
            recorder=Recorder(database, routes.ledger),
            gatekeeper=Gatekeeper(routes.limits, open_limiter(None, routes.limits)),
            client=client,
            sanitizers=sanitizers,
            strip_fields=frozenset(routes.sanitize.strip_fields),
            context=Context(frozenset(routes.sanitize.strip_fields), database),
            jobs=database,
            forwarding=HeaderForwarding(
                routes.sanitize.forward_headers, routes.sanitize.request_id_headers, routes.headers.upstream_request_id
            ),
            answer_limits=answer_limits,
            authenticate=Authenticator(database, routes.gateway.key_prefix, routes.gateway.key_cache_seconds),
            prober=Prober(client, catalog),
            attempts=Policy(routes.fallback),
            pools={p.id: _pool(p.spec, transport) for p in catalog.providers.values()},
            health=Health(routes.breaker, list(catalog.providers)),
            watchdog=Watchdog(),
        )

    async def startup(self) -> None:
        await self.database.open()
        await self._seed_spend()
        self.recorder.start()
        await self.prober.start()

    async def _seed_spend(self) -> None:
        """Budgets count what the ledger already holds for this day and month."""
        periods = Periods.at(time.time())
        day = await self.database.spend_since(periods.day_ends - 86_400)
        month_start = datetime.datetime.fromisoformat(periods.month + "-01").replace(tzinfo=datetime.UTC)
        month = await self.database.spend_since(month_start.timestamp())
        await self.gatekeeper.limiter.seed_spend(periods, day, month)

    async def shutdown(self) -> None:
        await self.prober.stop()
        await self.recorder.stop()
        await self.gatekeeper.close()
        await self.client.aclose()
        await self.watchdog.close()
        for pool in self.pools.values():
            await pool.client.aclose()
        await self.database.close()
