"""Tiny random models that real vLLM serves on a CPU, and helpers that start vLLM for tests."""
