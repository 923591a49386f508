"""Functional checks of a running endpoint."""
