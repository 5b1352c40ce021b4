"""Wire codecs, selected by name from the specs (`provider.wire`, `wire_rules[].wire`)."""

from __future__ import annotations

from engine.wires.anthropic_messages import AnthropicMessagesWire
from engine.wires.base import Wire
from engine.wires.gemini import GeminiWire
from engine.wires.openai_chat import OpenAIChatWire
from engine.wires.openai_responses import OpenAIResponsesWire

WIRES: dict[str, Wire] = {
    wire.name: wire for wire in (OpenAIChatWire(), OpenAIResponsesWire(), GeminiWire(), AnthropicMessagesWire())
}
