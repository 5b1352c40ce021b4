"""compose engine: an OpenAI-compatible LLM gateway whose providers are TOML specs."""

import sys

# Two imports no gateway process uses, each made only because its optional dependencies happen to be installed:
# `import httpx` imports httpx's command-line client (`httpx._main`: click, rich, pygments, all installed with
# litestar), and uvicorn imports watchfiles for `--reload`. Together ~3.8 MiB of every worker's resident memory.
# A None entry in sys.modules makes an import fail as though the module were missing, a case both handle
# (httpx's `main` then says what to install; uvicorn's reload falls back to polling).
for _unused in ("httpx._main", "watchfiles"):
    if _unused not in sys.modules:
        sys.modules[_unused] = None  # type: ignore[assignment]
