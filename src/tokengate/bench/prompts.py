"""Prompt text whose token count we control: salted random words, calibrated against the engine's tokenizer.

Tokenizers differ (a tiny BPE, tekken, a real model's), so the words-per-token ratio is measured once per
run with POST /tokenize; without /tokenize we assume 1.3 tokens per word. A salt at the very start of every
text makes its first KV block unique, so no earlier run (and no other prompt in this run) can hit the cache.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tokengate.errors import InvalidInputError

# Plain words every tokenizer knows; drawn at random so texts do not repeat long token runs.
_WORD_LIST = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death experience effect "
    "class control care field development role effort rate heart drug show leader light voice wife police "
    "mind price report decision son view relationship town road arm difference value building action model "
    "season society tax director position player record paper space ground form event official matter center "
    "couple site project activity star table need court oil situation cost industry figure street image phone "
    "data picture practice piece land product doctor wall patient worker news test movie north love support "
    "technology step baby computer type attention film tree source organization hair window evidence "
    "population site bed color garden river cloud stone bridge engine signal memory letter paper island"
)
WORDS = tuple(_WORD_LIST.split())
DEFAULT_TOKENS_PER_WORD = 1.3
PAD = " x"  # one token in the tokenizers we met (" ." is two in the tiny qwen3): the fine step after words
CALIBRATION_WORDS = 400

CountTokens = Callable[[str], Awaitable[int | None]]


def new_salt() -> str:
    return secrets.token_hex(4)


def words(count: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(0, count)))


@dataclass
class PromptFactory:
    """Builds salted texts of about N tokens; `tokens_per_word` comes from `calibrate`."""

    salt: str
    seed: int = 0
    tokens_per_word: float = DEFAULT_TOKENS_PER_WORD

    def rng(self, key: str) -> random.Random:
        return random.Random(f"{self.seed}:{self.salt}:{key}")

    def text(self, tokens: int, key: str) -> str:
        """About `tokens` tokens of text (on its own, without any chat template), unique to (salt, key)."""
        head = f"{self.salt}-{key}:"
        return f"{head} {words(self.word_count(tokens), self.rng(key))}"

    def word_count(self, tokens: int) -> int:
        return max(1, round(tokens / self.tokens_per_word))

    def with_words(self, word_count: int, key: str, pads: int = 0) -> str:
        """The salted text of `word_count` words and `pads` one-character fillers (what `fit_text` settled on)."""
        return f"{self.salt}-{key}: {words(word_count, self.rng(key))}{PAD * pads}"


@dataclass
class FittedText:
    text: str
    words: int
    tokens: int | None  # as counted; None without /tokenize
    pads: int = 0


async def calibrate(factory: PromptFactory, count_tokens: CountTokens) -> bool:
    """Measure tokens per word on this engine's tokenizer; False (and the default ratio) without /tokenize."""
    sample = words(CALIBRATION_WORDS, factory.rng("calibration"))
    count = await count_tokens(sample)
    if not count:
        return False
    factory.tokens_per_word = count / CALIBRATION_WORDS
    return True


async def fit_text(
    factory: PromptFactory, tokens: int, key: str, count_tokens: CountTokens, *, rounds: int = 4
) -> FittedText:
    """A text whose counted tokens (by `count_tokens`, e.g. a whole chat prompt) come within 0.2% (at least
    1 token) of `tokens`: rescale the word count by the ratio the last count showed, then pad one token at a
    time (a word is 1-4 tokens, too coarse on small vocabularies)."""
    if tokens <= 0:
        raise InvalidInputError(f"prompt tokens must be positive, got {tokens}")
    tolerance = max(1, tokens // 500)
    fitted = await _count(factory, factory.word_count(tokens), 0, key, count_tokens)
    for _ in range(rounds):  # whole words, from below: pads can only add
        if fitted.tokens is None or 0 <= tokens - fitted.tokens <= tolerance:
            return fitted
        word_count = max(1, int(fitted.words * tokens / max(1, fitted.tokens)))
        if fitted.tokens > tokens and word_count == fitted.words:
            word_count -= 1
        fitted = await _count(factory, word_count, 0, key, count_tokens)
    for _ in range(rounds):
        if fitted.tokens is None or abs(fitted.tokens - tokens) <= tolerance:
            break
        fitted = await _count(factory, fitted.words, max(0, fitted.pads + tokens - fitted.tokens), key, count_tokens)
    return fitted


async def _count(factory: PromptFactory, word_count: int, pads: int, key: str, count: CountTokens) -> FittedText:
    text = factory.with_words(word_count, key, pads)
    return FittedText(text=text, words=word_count, tokens=await count(text), pads=pads)


async def fit_many(
    factory: PromptFactory, tokens: int, keys: list[str], count_tokens: CountTokens, *, concurrency: int = 16
) -> list[str]:
    """One text per key, each about `tokens` long and unique from its first token (so no two share a KV block):
    one fitted body behind per-key salted heads, every text counted once and topped up or refitted if off."""
    body = await fit_text(factory, tokens, "body", count_tokens)
    shared = body.text.split(": ", 1)[1]
    texts = [f"{factory.salt}-{key}: {shared}" for key in keys]
    if body.tokens is None:
        return texts
    tolerance = max(1, tokens // 500)
    for start in range(0, len(texts), concurrency):
        batch = range(start, min(start + concurrency, len(texts)))
        counts = await asyncio.gather(*(count_tokens(texts[i]) for i in batch))
        for i, count in zip(batch, counts, strict=True):
            if count is None or abs(count - tokens) <= tolerance:
                continue
            if count < tokens:
                texts[i] += PAD * (tokens - count)
            else:
                texts[i] = (await fit_text(factory, tokens, keys[i], count_tokens)).text
    return texts
