"""Request pieces the live tests share."""

# Random weights never close a free-form string: enum-only, strict arguments let forced tool calls finish.
# The same tool `tokengate validate` uses, so the tests exercise what the product sends.
from tokengate.validate.checks.tools import WEATHER_TOOL

__all__ = ["WEATHER_TOOL"]
