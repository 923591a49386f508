"""Tokenizer files for tiny models: a locally trained byte-level BPE (qwen3) or the real tekken (mistral)."""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from tokengate.errors import InvalidInputError

TEKKEN_VOCAB_SIZE = 131072
TEKKEN_FILE = "tekken_240718.json"  # the text-only tekken that mistral_common ships
DEFAULT_BPE_VOCAB_SIZE = 4096
MIN_BPE_VOCAB_SIZE = 512
MAX_BPE_VOCAB_SIZE = 16384

# Control tokens: special ones are dropped from decoded text, the others stay visible
# because vLLM's hermes tool parser and qwen3 reasoning parser read them in the output.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VISIBLE_CONTROL_TOKENS = (
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
)  # fmt: skip


@dataclass(frozen=True)
class TokenIds:
    bos: int
    eos: int
    extra_eos: tuple[int, ...] = ()


def check_bpe_vocab_size(size: int) -> None:
    if not MIN_BPE_VOCAB_SIZE <= size <= MAX_BPE_VOCAB_SIZE:
        raise ValueError(
            f"vocab {size} is out of range for the locally trained BPE; "
            f"use {MIN_BPE_VOCAB_SIZE}..{MAX_BPE_VOCAB_SIZE} (default {DEFAULT_BPE_VOCAB_SIZE})"
        )


def write_tokenizer(directory: Path, family: str, vocab_size: int) -> TokenIds:
    if family == "mistral":
        return _write_tekken(directory)
    return _write_bpe(directory, vocab_size)


def _write_tekken(directory: Path) -> TokenIds:
    try:
        source = resources.files("mistral_common") / "data" / TEKKEN_FILE
        with resources.as_file(source) as path:
            shutil.copyfile(path, directory / "tekken.json")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise InvalidInputError(
            f"the mistral family needs {TEKKEN_FILE} from mistral_common; run `pip install mistral-common`"
        ) from exc
    return TokenIds(bos=1, eos=2)


def _write_bpe(directory: Path, vocab_size: int) -> TokenIds:
    tokenizer = Tokenizer.from_str(_trained_bpe_json(vocab_size))
    (directory / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n")
    ids = TokenIds(
        bos=tokenizer.token_to_id("<|endoftext|>"),
        eos=tokenizer.token_to_id("<|im_end|>"),
        extra_eos=(tokenizer.token_to_id("<|endoftext|>"),),
    )
    template = (resources.files("tokengate.testing") / "templates" / "qwen3_chat_template.jinja").read_text()
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": template,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    special_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return ids


@cache
def _trained_bpe_json(vocab_size: int) -> str:
    """Train once per vocab size per process; training on a fixed corpus is deterministic."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    all_control = [*SPECIAL_TOKENS, *VISIBLE_CONTROL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=all_control,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in VISIBLE_CONTROL_TOKENS])
    if tokenizer.get_vocab_size() != vocab_size:
        raise InvalidInputError(
            f"the BPE trainer reached {tokenizer.get_vocab_size()} tokens, not {vocab_size}; "
            f"choose a smaller --vocab (default {DEFAULT_BPE_VOCAB_SIZE})"
        )
    return tokenizer.to_str()


_SEED_TEXT = """\
The quick brown fox jumps over the lazy dog. Tokengate plans, starts and measures language models.
def add(a, b):\n    return a + b\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
What is the weather in Paris today? Call the tool, then answer in one sentence.
Le modèle répond en français et en anglais; les caches de préfixe accélèrent les agents.
import json\nfor line in open("data.txt"):\n    print(json.loads(line)["id"])\n
SELECT id, name FROM users WHERE created_at > '2025-01-01' ORDER BY id;
"""

_SYLLABLES = (
    "ka", "ri", "to", "mo", "na", "se", "lu", "vi", "de", "pa", "qu", "ex", "an", "or", "in", "th",
    "er", "on", "al", "ch", "st", "re", "co", "ma", "pro", "ing", "tion", "ment", "able", "ous",
    "ive", "ize", "ful", "less", "ness", "ship", "hood", "ward", "wise", "graph", "log",
)  # fmt: skip


def _training_corpus() -> list[str]:
    """A fixed corpus: real text for common merges, pseudo-words so larger vocabularies fill up."""
    rng = random.Random(20251125)
    lines = [_SEED_TEXT] * 20
    for _ in range(6000):
        words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(rng.randint(4, 14))]
        number = str(rng.randint(0, 99999))
        lines.append(" ".join(words) + f" {number}.")
    return lines
