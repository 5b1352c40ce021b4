"""compose engine: an OpenAI-compatible LLM gateway whose providers are TOML specs."""
