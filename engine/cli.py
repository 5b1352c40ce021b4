"""`engine`: serve the gateway, check specs, show what a request lowers to, manage gateway keys."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from engine.errors import GatewayError


def _specs_dir(args: argparse.Namespace) -> Path:
    from engine.gateway import default_specs_dir

    return Path(args.specs) if args.specs else default_specs_dir()


def _load_or_report(args: argparse.Namespace) -> Any:
    """The specs, or None after printing every problem (for commands that only read them)."""
    from engine.spec.loader import SpecError, load_specs

    try:
        return load_specs(_specs_dir(args))
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    from engine.catalog import Catalog
    from engine.spec.loader import SpecError, load_specs

    try:
        specs = load_specs(_specs_dir(args))
    except SpecError as exc:
        print(f"engine check: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    catalog = Catalog.from_specs(specs)
    models = sum(len(f.spec.models) for f in specs.providers)
    print(
        f"ok: {len(specs.routes.routes)} routes, {len(specs.providers)} providers, {models} model rows,"
        f" {len(specs.facts)} shared model facts"
    )
    for provider in catalog.providers.values():
        print(f"  {provider.id:<12} {len(provider.spec.models):>3} models  {_liveness(provider, None)}")
    return 0


def _liveness(provider: Any, answering: bool | None) -> str:
    """One provider's state in words: key set or not; for local servers, whether they answer."""
    if provider.probed:
        where = f"local server at {provider.base_url}"
        if answering is None:
            return f"{where} (live while it answers GET {provider.spec.liveness.probe_path}; not probed here)"
        return f"{where}: {'answering, live' if answering else 'not answering, not live'}"
    if provider.live:
        return "live"
    if provider.api_key and not provider.endpoint_set:
        return f"no endpoint (${provider.spec.provider.base_url_env} unset)"
    return f"no key (${provider.spec.auth.env} unset)"


def _probe(providers: list[Any]) -> dict[str, bool]:
    """Probe local servers once, concurrently (what the gateway does at start-up)."""
    import asyncio

    import httpx

    from engine.liveness import probe

    async def run() -> dict[str, bool]:
        async with httpx.AsyncClient(trust_env=False) as client:
            results = await asyncio.gather(*(probe(client, p) for p in providers))
        return {p.id: ok for p, ok in zip(providers, results, strict=True)}

    return asyncio.run(run()) if providers else {}


def cmd_catalog_import(args: argparse.Namespace) -> int:
    """Refresh catalog rows from a models.dev-shaped directory: print the diff, and write it unless --dry-run."""
    from engine import catalog_import

    data = Path(args.source)
    if not (data / "providers").is_dir():
        print(f"engine catalog import: {data} has no providers/ directory (a models.dev checkout)", file=sys.stderr)
        return 2
    report = catalog_import.refresh(_specs_dir(args), data, args.provider or ())
    for line in report.missing:
        print(f"not refreshed: {line}", file=sys.stderr)
    if not report.changed:
        print("catalog is up to date with this data")
        return 0
    print(report.diff(), end="")
    problems = catalog_import.validate(report)
    if problems:
        print("engine catalog import: the refreshed specs would fail engine check; nothing written:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"dry run: {len(report.changed)} file(s) would change", file=sys.stderr)
        return 0
    written = list(catalog_import.write(report))
    print(f"wrote {len(written)} file(s); review them with git diff", file=sys.stderr)
    return 0


def cmd_providers(args: argparse.Namespace) -> int:
    """Every provider spec, the environment variables it reads, and whether it is live here and now."""
    from engine.catalog import Catalog

    specs = _load_or_report(args)
    if specs is None:
        return 1
    catalog = Catalog.from_specs(specs)
    providers = sorted(catalog.providers.values(), key=lambda p: p.id)
    answering = {} if args.no_probe else _probe([p for p in providers if p.probed])
    rows = []
    for p in providers:
        auth = p.spec.auth
        key = f"{auth.env}{'' if auth.required else ' (optional)'}"
        env = ", ".join(v for v in (key, p.spec.provider.base_url_env) if v)
        rows.append((p.id, p.spec.provider.wire, str(len(p.spec.models)), env, _liveness(p, answering.get(p.id))))
    header = ("PROVIDER", "WIRE", "MODELS", "ENVIRONMENT", "STATE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engine import server
    from engine.catalog import Catalog
    from engine.spec.loader import SpecError, load_specs

    specs_dir = _specs_dir(args)
    try:
        specs = load_specs(specs_dir)  # fail before binding the port, with every problem listed
    except SpecError as exc:
        print("engine serve: the specs do not load:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    os.environ["ENGINE_SPECS"] = str(specs_dir)  # for every worker process
    os.environ[server.ENV] = specs.routes.server.model_dump_json()  # the HTTP server's bounds, likewise
    catalog = Catalog.from_specs(specs)
    local = [p for p in catalog.providers.values() if p.probed]
    answering = _probe(local)
    print(f"engine: listening on http://{args.host}:{args.port}/external/v1 ({args.workers} worker(s))")
    live = catalog.live_providers()
    for provider in live:
        print(f"engine: provider {provider.id} is live ({len(provider.spec.models)} models)")
    for provider in local:
        state = "answering: live" if answering[provider.id] else "not answering: not live until it does"
        every = provider.spec.liveness.interval_seconds
        print(f"engine: [local] {provider.id} at {provider.base_url} {state} (probed every {every:g} s)")
    if not live and not any(answering.values()):
        names = ", ".join(sorted(f"${p.spec.auth.env}" for p in catalog.providers.values() if not p.probed))
        print(f"engine: no provider is live; set one of {names}, or start a local server")
    print("engine: `engine providers` lists every provider, its environment variables and its state")
    sys.stdout.flush()
    uvicorn.run(
        "engine.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http=f"{server.__name__}:{server.GatewayProtocol.__name__}",  # uvicorn's httptools protocol, bounded
        timeout_keep_alive=specs.routes.server.keep_alive_seconds,
        access_log=args.access_log,
        log_level="info" if args.access_log else "warning",
    )
    return 0


def cmd_lower(args: argparse.Namespace) -> int:
    from engine.catalog import Catalog
    from engine.lower import Context
    from engine.operations import OPERATIONS
    from engine.validate import parse_json_object

    specs = _load_or_report(args)
    if specs is None:
        return 1
    if args.error:
        return _lower_error(args, specs)
    operation = OPERATIONS.get(args.operation)
    if operation is None or operation.prepare is None or operation.body != "json":
        names = ", ".join(_lowerable())
        print(f"engine lower: --operation {args.operation!r} is not one of {names}", file=sys.stderr)
        return 1
    raw = Path(args.file).read_bytes() if args.file and args.file != "-" else sys.stdin.buffer.read()
    try:
        body = parse_json_object(raw, specs.routes.gateway.max_json_depth)
        if args.model:
            body["model"] = args.model
        if operation.validate is not None:
            operation.validate(body)
        # The provider this machine would use: live ones first, then the spec's order.
        candidates = sorted(Catalog.from_specs(specs).all_candidates(body["model"]), key=lambda c: not c.provider.live)
        if args.provider:
            candidates = [c for c in candidates if c.provider.id == args.provider]
        if not candidates:
            via = f" via {args.provider!r}" if args.provider else ""
            print(f"engine lower: no provider spec serves {body['model']!r}{via}", file=sys.stderr)
            return 1
        context = Context(frozenset(specs.routes.sanitize.strip_fields))
        upstream, _ = operation.prepare(body, candidates[0], context)
    except GatewayError as exc:
        print(f"engine lower: the gateway would answer {exc.status}:", file=sys.stderr)
        print(json.dumps(exc.payload(), indent=2), file=sys.stderr)
        return 1
    shown: dict[str, Any] = {
        "provider": upstream.candidate.provider.id,
        "wire": upstream.choice.wire.name,
        "why": upstream.choice.reason,
        "method": upstream.method,
        "url": upstream.url,
        "headers": upstream.redacted_headers(),
        "body": upstream.body,
    }
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def _lower_error(args: argparse.Namespace, specs: Any) -> int:
    """`engine lower --error FILE`: a recorded upstream error → the client's answer and the rule that decided it."""
    from engine.catalog import Catalog
    from engine.error_rules import compile_error_rules
    from engine.explain import explain
    from engine.sanitize import Sanitizer

    catalog = Catalog.from_specs(specs)
    provider_id = args.provider
    if provider_id is None and args.model:
        candidates = sorted(catalog.all_candidates(args.model), key=lambda c: not c.provider.live)
        provider_id = candidates[0].provider.id if candidates else None
    provider = catalog.providers.get(provider_id or "")
    if provider is None:
        known = ", ".join(sorted(catalog.providers))
        print(f"engine lower --error: name the provider that answered (--provider; one of {known})", file=sys.stderr)
        return 1
    routes = specs.routes
    sanitizer = Sanitizer.build(provider, compile_error_rules(routes.error_rules), routes.sanitize.redact_patterns)
    body = Path(args.error).read_bytes() if args.error != "-" else sys.stdin.buffer.read()
    stream = args.stream or args.error.endswith(".sse")
    print(json.dumps(explain(sanitizer, args.status, body, stream), indent=2, ensure_ascii=False))
    return 0


def _lowerable() -> list[str]:
    from engine.operations import OPERATIONS

    return [name for name, row in OPERATIONS.items() if row.resolve == "model" and row.body == "json"]


def _database(args: argparse.Namespace) -> Any:
    from engine.storage import open_database

    return open_database(args.db)


def _routes(args: argparse.Namespace) -> Any:
    from engine.spec.loader import load_specs

    return load_specs(_specs_dir(args)).routes


def _limit_changes(args: argparse.Namespace, routes: Any) -> dict[str, float]:
    """The limit flags given (`none` → -1: remove the key's own value), checked like routes.toml's."""
    from engine.limits import check_limit_values
    from engine.spec.models import LIMIT_NAMES
    from engine.storage import StoreError

    changes = {name: value for name in LIMIT_NAMES if (value := getattr(args, name, None)) is not None}
    try:
        check_limit_values(changes)
    except ValueError as exc:
        raise StoreError(f"invalid limit: {exc}") from None
    tier = getattr(args, "tier", None)
    if tier is not None and tier not in routes.limits.tiers:
        known = ", ".join(sorted(routes.limits.tiers)) or "none are defined in routes.toml [limits.tiers]"
        raise StoreError(f"no tier {tier!r}; known tiers: {known}")
    return changes


def _limits_text(record: Any) -> str:
    return ",".join(f"{name}={value:g}" for name, value in sorted(record.limits.items())) or "-"


async def _keys(args: argparse.Namespace) -> int:
    from engine.usage_report import grouped

    routes = _routes(args)
    changes = _limit_changes(args, routes) if args.keys_command in ("create", "update") else {}
    db = _database(args)
    await db.open()
    try:
        if args.keys_command == "create":
            tier = args.tier or routes.limits.default_tier
            key = await db.create_key(args.name, routes.gateway.key_prefix, tier=tier, limits=changes)
            print(f"created key {args.name!r}; it is shown once, store it now:", file=sys.stderr)
            print(key)
        elif args.keys_command == "update":
            record = await db.update_key(args.name, tier=args.tier, limits=changes, clear_tier=args.no_tier)
            print(f"updated key {record.name!r}: tier {record.tier or '-'}, limits {_limits_text(record)}")
        elif args.keys_command == "list":
            records = await db.list_keys()
            totals = {e["key"]: e for e in grouped(await db.daily(), ["key"], {})}
            print(
                f"{'NAME':<20} {'ID':<13} {'CREATED':<20} {'STATE':<8} {'TIER':<8} {'LIMITS':<24} {'REQUESTS':>9}"
                f" {'TOKENS':>12} {'COST_USD':>10}"
            )
            for record in records:
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created_at))
                state = "revoked" if record.revoked_at else "active"
                usage = totals.get(record.id, {})
                tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
                print(
                    f"{record.name:<20} {record.id:<13} {created:<20} {state:<8} {record.tier or '-':<8}"
                    f" {_limits_text(record):<24} {usage.get('requests', 0):>9} {tokens:>12}"
                    f" {usage.get('cost_usd', 0.0):>10.6f}"
                )
        elif args.keys_command == "revoke":
            await db.revoke_key(args.name)
            print(f"revoked key {args.name!r}")
    finally:
        await db.close()
    return 0


def _with_database(command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Callable[..., int]:
    """A database command for argparse: run it on an event loop; a StoreError is its one-line failure."""

    def run(args: argparse.Namespace) -> int:
        from engine.storage import StoreError

        try:
            return asyncio.run(command(args))
        except StoreError as exc:
            print(f"engine {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


async def _usage(args: argparse.Namespace) -> int:
    from engine.usage_report import GROUPS, grouped, table

    by = [name.strip() for name in args.by.split(",") if name.strip()]
    unknown = [name for name in by if name not in GROUPS]
    if unknown or not by:
        print(f"engine usage: --by takes a comma-separated list of {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    db = _database(args)
    await db.open()
    try:
        names = {record.id: record.name for record in await db.list_keys()}
        items = await db.daily(args.since, args.until)
    finally:
        await db.close()
    if args.key:
        items = [item for item in items if names.get(item.key_id) == args.key or item.key_id == args.key]
    entries = grouped(items, by, names)
    print(json.dumps(entries, indent=2) if args.json else table(entries, by))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.spec.schema import publish

    for path in publish(_specs_dir(args) / "schema"):
        print(f"wrote {path}")
    return 0


def _day(value: str) -> str:
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day as YYYY-MM-DD") from None


def _limit_value(value: str) -> float:
    if value.lower() == "none":
        return -1.0  # remove the key's own value: its tier's or the default applies
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (or `none`)") from None


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    for flag, what in (
        ("--rpm", "requests per minute"),
        ("--tpm", "tokens per minute"),
        ("--concurrent", "requests in flight at once"),
        ("--daily-usd", "spend budget per UTC day"),
        ("--monthly-usd", "spend budget per UTC month"),
    ):
        parser.add_argument(flag, type=_limit_value, help=f"{what} for this key (`none`: the tier's or default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_specs(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--specs", help="spec directory (default: $ENGINE_SPECS or ./specs of the checkout)")
        return p

    serve = with_specs(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=cmd_serve)

    check = with_specs(sub.add_parser("check", help="validate the specs; exit 1 naming file and key"))
    check.set_defaults(func=cmd_check)

    lower = with_specs(sub.add_parser("lower", help="print the upstream request a client request becomes"))
    lower.add_argument("file", nargs="?", help="client request JSON (default: stdin)")
    lower.add_argument("--model", help="public model ID (default: the request's `model`)")
    lower.add_argument("--provider", help="use this provider's spec even if another is preferred")
    lower.add_argument(
        "--operation",
        metavar="OPERATION",
        default="chat.completions",
        help="the operation the request was sent to, as routes.toml names it (default: chat.completions)",
    )
    lower.add_argument(
        "--error",
        metavar="FILE",
        help="instead: a recorded upstream answer (error JSON, a 200 JSON, or SSE); print what the client gets"
        " and which error rule decided it",
    )
    lower.add_argument("--status", type=int, default=400, help="with --error: the upstream's HTTP status (default 400)")
    lower.add_argument(
        "--stream", action="store_true", help="with --error: the file is an SSE stream (implied by .sse)"
    )
    lower.set_defaults(func=cmd_lower)

    keys = with_specs(sub.add_parser("keys", help="manage gateway keys"))
    db_help = "database URL or SQLite file (default: $ENGINE_DB, else var/engine.sqlite3)"
    keys.add_argument("--db", help=db_help)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints it as the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--tier", help="a tier of routes.toml [limits.tiers] (default: limits.default_tier)")
    _limit_flags(create)
    update = keys_sub.add_parser("update", help="change a key's tier and limits; the key itself stays the same")
    update.add_argument("name")
    tiers = update.add_mutually_exclusive_group()
    tiers.add_argument("--tier", help="move the key to this tier")
    tiers.add_argument("--no-tier", action="store_true", help="take the key out of its tier")
    _limit_flags(update)
    keys_sub.add_parser("list", help="list keys with their usage")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    keys.set_defaults(func=_with_database(_keys))

    usage = sub.add_parser("usage", help="usage and cost from the ledger, per key / model / provider / day")
    usage.add_argument("--db", help=db_help)
    usage.add_argument("--by", default="day,key,model,provider", help="group by (default: day,key,model,provider)")
    usage.add_argument("--since", type=_day, help="first day, YYYY-MM-DD (UTC)")
    usage.add_argument("--until", type=_day, help="last day, YYYY-MM-DD (UTC)")
    usage.add_argument("--key", help="only this key (name or id)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(func=_with_database(_usage))

    providers = with_specs(
        sub.add_parser("providers", help="list every provider, its environment variables and whether it is live")
    )
    providers.add_argument("--no-probe", action="store_true", help="do not probe local servers")
    providers.set_defaults(func=cmd_providers)

    catalog = sub.add_parser("catalog", help="keep the catalog's rows current as data")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    refresh = with_specs(
        catalog_sub.add_parser(
            "import", help="refresh limits, modalities, capability flags and prices from models.dev-shaped data"
        )
    )
    refresh.add_argument("source", help="a models.dev checkout (a directory holding providers/ and models/)")
    refresh.add_argument("--provider", action="append", help="only this provider's rows (repeatable)")
    refresh.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    refresh.set_defaults(func=cmd_catalog_import)

    schema = with_specs(sub.add_parser("schema", help="regenerate specs/schema/*.schema.json"))
    schema.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
