"""Lines per provider: how much TOML a provider is, and how much Python its codec is (issue 10).

    .venv/bin/python bench/loc.py                 # the shipped specs/
    .venv/bin/python bench/loc.py --specs DIR     # another spec tree

Prints markdown tables. How lines are counted, so the numbers can be checked by hand:

- **TOML data** lines are non-blank lines that are not comments; **comments** are the `#` lines (where the
  sources are cited). Both for the provider file itself, `specs/providers/<id>.toml`.
- **Profile share**: a profile (`specs/profiles/<name>.toml`) listed in `profiles` by n providers counts
  1/n of its data lines to each of them. **Facts share**: the same for each facts file
  (`specs/models/<maker>/<model>.toml`) its model rows name in `facts`, divided among the providers naming
  it. A facts file is a model's own facts (limits, prices, modalities), shared by every provider serving it.
- **Python** lines are non-blank, non-comment lines outside docstrings. A provider's codecs are the modules
  of the wires it can select (`provider.wire` and every `wire_rules[].wire`, its own and its profiles'), plus
  those wires' siblings (embeddings, speech... codecs) and native passthroughs. Codec modules are listed
  once with their sizes; the shared machinery (everything else under engine/) is counted separately.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.wires import WIRES
from engine.wires.base import Wire

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "engine"


def toml_lines(path: Path) -> tuple[int, int]:
    """(data lines, comment lines) of a TOML file; the `#:schema` directive counts as neither."""
    data = comments = 0
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#:schema"):
            continue
        if text.startswith("#"):
            comments += 1
        else:
            data += 1
    return data, comments


def python_lines(path: Path) -> int:
    """Non-blank, non-comment lines of a Python file, docstrings left out."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def module_of(wire: Wire) -> Path:
    return Path(inspect.getfile(type(wire))).resolve()


def codec_modules(wire_name: str) -> set[Path]:
    """The module of a wire, of its siblings and of its native passthrough."""
    wire = WIRES[wire_name]
    related: list[Wire] = [wire, *getattr(wire, "siblings", {}).values()]
    native = getattr(wire, "native", None)
    if native is not None:
        related.append(native)
    return {module_of(w) for w in related}


@dataclass
class Provider:
    id: str
    path: Path
    wires: list[str]  # the default first
    profiles: list[str]
    facts: set[str]


def read_provider(path: Path, profiles_dir: Path) -> Provider:
    spec: dict[str, Any] = tomllib.loads(path.read_text())
    profiles = list(spec.get("profiles", []))
    wires = [spec["provider"]["wire"]]
    rules = list(spec.get("wire_rules", []))
    for name in profiles:
        rules += tomllib.loads((profiles_dir / f"{name}.toml").read_text()).get("wire_rules", [])
    for rule in rules:
        if rule["wire"] not in wires:
            wires.append(rule["wire"])
    facts = {row["facts"] for row in spec.get("models", {}).values() if row.get("facts")}
    return Provider(spec["provider"]["id"], path, wires, profiles, facts)


def relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def report(specs: Path) -> str:
    providers = [read_provider(p, specs / "profiles") for p in sorted((specs / "providers").glob("*.toml"))]
    profile_users = Counter(name for p in providers for name in p.profiles)
    facts_users = Counter(name for p in providers for name in p.facts)
    codecs = {module for p in providers for wire in p.wires for module in codec_modules(wire)}
    codec_size = {module: python_lines(module) for module in codecs}

    out = [
        "| provider | wires it can select | TOML data | TOML comments | + profile share | + facts share"
        " | TOML total | codec Python (modules) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in providers:
        data, comments = toml_lines(p.path)
        profile_share = sum(toml_lines(specs / "profiles" / f"{n}.toml")[0] / profile_users[n] for n in p.profiles)
        facts_share = sum(
            toml_lines(specs / "models" / f"{name}.toml")[0] / facts_users[name]
            for name in p.facts
            if (specs / "models" / f"{name}.toml").is_file()
        )
        modules = sorted({m for wire in p.wires for m in codec_modules(wire)})
        python = sum(codec_size[m] for m in modules)
        names = ", ".join(m.stem for m in modules)
        out.append(
            f"| {p.id} | {', '.join(p.wires)} | {data} | {comments} | {profile_share:.0f} | {facts_share:.0f}"
            f" | {data + profile_share + facts_share:.0f} | {python} ({names}) |"
        )

    out += ["", "| codec module | Python lines | providers selecting it |", "|---|---:|---|"]
    for module in sorted(codecs):
        users = [p.id for p in providers if any(module in codec_modules(w) for w in p.wires)]
        out.append(f"| {relative(module)} | {codec_size[module]} | {len(users)}: {', '.join(users)} |")

    shared: dict[str, int] = Counter()
    for path in sorted(ENGINE.rglob("*.py")):
        if path.resolve() in codecs:
            continue
        area = relative(path.parent) + "/" if path.parent != ENGINE else "engine/*.py"
        shared[area] += python_lines(path)
    out += ["", "| shared machinery (no provider's own) | Python lines |", "|---|---:|"]
    out += [f"| {area} | {lines} |" for area, lines in sorted(shared.items())]
    out.append(f"| **total** | **{sum(shared.values())}** |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--specs", type=Path, default=REPO / "specs", help="the spec tree (default: specs/)")
    print(report(parser.parse_args().specs.resolve()))


if __name__ == "__main__":
    main()
