"""Every error Tokengate raises on purpose.

    TokengateError                 base; the CLI prints its message and exits 2
    ├── InvalidInputError          bad argument or file content; names the field and the fix
    ├── EngineNotInstalledError    the CPU build of vLLM is missing; says how to install it
    └── EngineError                a vLLM server misbehaved
        ├── EngineStartError       it exited or never became healthy; carries the log tail
        └── EngineRequestError     it answered a request with an unexpected status

Library code raises these; only the CLI turns them into messages and exit codes.
"""

from __future__ import annotations


class TokengateError(Exception):
    """Base of every error Tokengate raises on purpose."""

    exit_code: int = 2


class InvalidInputError(TokengateError):
    """A user-supplied value is wrong; the message names the field and how to fix it."""


class EngineNotInstalledError(TokengateError):
    """No Python with vLLM was found for starting a local engine."""


class EngineError(TokengateError):
    """A vLLM server did something we did not expect."""

    exit_code = 1


class EngineStartError(EngineError):
    """The engine exited during startup or never answered /health in time."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class EngineRequestError(EngineError):
    """The engine answered a request with an unexpected status."""
