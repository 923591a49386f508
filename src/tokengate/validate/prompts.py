"""Prompts of a chosen length: a salted long one (a fresh prefix each run) and one past max_model_len."""

from __future__ import annotations

import random

from tokengate.validate.endpoint import Endpoint

WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "engineers", "measure", "how",
    "long", "each", "request", "waits", "for", "first", "token", "of", "its", "answer", "and", "count", "which",
    "cached", "blocks", "prompt", "server", "can", "reuse",
)  # fmt: skip
SAMPLE_WORDS = 200
FALLBACK_TOKENS_PER_WORD = 1.5


def salted_prompt(words: int, salt: str) -> str:
    """`words` words that start with `salt`, so no earlier run shares its prefix."""
    rng = random.Random(salt)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Run {salt}. Repeat the last word of these notes: {body}"


def tokens_per_word(endpoint: Endpoint, model: str) -> float:
    """Measured with the server's own tokenizer (/tokenize, which the gateway passes through)."""
    sample = salted_prompt(SAMPLE_WORDS, "sample")
    reply = endpoint.post("/tokenize", {"model": model, "prompt": sample})
    count = reply.body.get("count") if reply.ok else None
    return count / SAMPLE_WORDS if isinstance(count, int) and count > 0 else FALLBACK_TOKENS_PER_WORD


def over_limit_prompt(max_model_len: int) -> str:
    """More words than max_model_len: every word is at least one token, and no tokenizer merges across spaces."""
    return " ".join(f"{WORDS[i % len(WORDS)]}{i % 97}" for i in range(max_model_len + 64))
