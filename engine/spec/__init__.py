"""The spec format (pydantic models), its published JSON Schema, and the loader."""
