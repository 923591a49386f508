"""Tokengate: run self-hosted LLMs on vLLM well, from one fleet file."""

__version__ = "0.1.0"

__all__ = ["__version__"]
