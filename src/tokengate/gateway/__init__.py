"""The OpenAI- and Anthropic-compatible gateway in front of the fleet."""
