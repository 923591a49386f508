"""Prompt texts: salted and unique per key, sized by a calibrated words-per-token ratio, fitted to a count."""

from __future__ import annotations

import asyncio

import pytest

from tokengate.bench.prompts import WORDS, PromptFactory, calibrate, fit_many, fit_text, new_salt
from tokengate.errors import InvalidInputError


def fake_tokenizer(text: str, *, per_word: float = 1.7, overhead: int = 9) -> int:
    """A tokenizer whose count we know: 1.7 tokens a word plus a chat template's overhead."""
    return round(len(text.split()) * per_word) + overhead


async def count(text: str) -> int | None:
    return fake_tokenizer(text)


async def no_tokenize(text: str) -> int | None:
    return None


def test_texts_are_salted_unique_and_reproducible() -> None:
    factory = PromptFactory(salt="ab12cd34", seed=0)
    text = factory.text(200, "2048.0")
    assert text.startswith("ab12cd34-2048.0: ")  # the salt opens the first KV block
    assert text == PromptFactory(salt="ab12cd34", seed=0).text(200, "2048.0")
    assert text != factory.text(200, "2048.1")
    assert text.split(": ", 1)[1] != PromptFactory(salt="ffffffff").text(200, "2048.0").split(": ", 1)[1]
    assert set(text.split()[1:]) <= set(WORDS)
    assert len(new_salt()) == 8 and new_salt() != new_salt()


def test_word_count_follows_the_ratio() -> None:
    factory = PromptFactory(salt="s", tokens_per_word=2.0)
    assert factory.word_count(1000) == 500
    assert len(factory.text(1000, "k").split()) == 501  # the salt word, then 500 words
    assert factory.word_count(0) == 1


def test_calibration_measures_tokens_per_word() -> None:
    factory = PromptFactory(salt="s")
    assert asyncio.run(calibrate(factory, count))
    assert factory.tokens_per_word == pytest.approx(1.7, abs=0.05)
    untouched = PromptFactory(salt="s")
    assert not asyncio.run(calibrate(untouched, no_tokenize))
    assert untouched.tokens_per_word == 1.3


@pytest.mark.parametrize("tokens", [64, 1024, 2048, 8000])
def test_fit_converges_on_the_counted_length(tokens: int) -> None:
    factory = PromptFactory(salt="s", tokens_per_word=1.3)  # deliberately wrong: the fit corrects it
    fitted = asyncio.run(fit_text(factory, tokens, "k", count))
    assert fitted.tokens == fake_tokenizer(fitted.text)
    assert abs(fitted.tokens - tokens) <= max(2, tokens // 200)
    assert fitted.text == factory.with_words(fitted.words, "k")


def test_fit_without_tokenize_and_bad_lengths() -> None:
    fitted = asyncio.run(fit_text(PromptFactory(salt="s"), 130, "k", no_tokenize))
    assert (fitted.tokens, fitted.words) == (None, 100)
    with pytest.raises(InvalidInputError, match="positive"):
        asyncio.run(fit_text(PromptFactory(salt="s"), 0, "k", count))


def test_coarse_words_are_topped_up_with_one_token_pads() -> None:
    async def coarse(text: str) -> int | None:  # 3.8 tokens a word (a 4k vocabulary), a pad is one token
        parts = text.split()
        pads = sum(1 for p in parts if p == "x")
        return round((len(parts) - pads) * 3.8) + pads + 9

    for tokens in (256, 257, 1000, 2048):
        fitted = asyncio.run(fit_text(PromptFactory(salt="s", tokens_per_word=3.8), tokens, "k", coarse))
        assert fitted.tokens is not None and abs(fitted.tokens - tokens) <= max(1, tokens // 500)
        assert fitted.text.endswith(" x" * fitted.pads)


def test_many_texts_share_a_fitted_body_behind_unique_heads() -> None:
    factory = PromptFactory(salt="s", tokens_per_word=1.7)
    keys = [f"r{i:03d}" for i in range(40)]
    texts = asyncio.run(fit_many(factory, 500, keys, count))
    assert len(set(texts)) == 40
    assert [t.split(":", 1)[0] for t in texts] == [f"s-{k}" for k in keys]  # unique from the first token
    assert all(abs(fake_tokenizer(t) - 500) <= 1 for t in texts)
    assert asyncio.run(fit_many(factory, 500, ["a"], no_tokenize))[0].startswith("s-a: ")
