"""One training example and its tokens: what the trainer reads, with no dependency on Redis or the chat stack.

`workers/training/data.py` builds the examples from a tenant's material (it needs the learning store); the
trainer and the training bench only read them from `train.jsonl`, so they import this module alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ExampleKind = Literal["term", "qa", "style", "helpful", "document"]
TRAIN_TERM_PROMPTS = ("What does {term} mean?", "What is {term}?")
"""How a term is asked during training; the gate uses data.EVAL_TERM_PROMPT, a phrasing never trained on."""
IGNORE = -100
"""The label of a token that carries no loss (a prompt token of a chat example)."""


@dataclass(frozen=True)
class Example:
    """One training example: a conversation turn (prompt, answer) or plain domain text, with where it came from."""

    kind: ExampleKind
    source: str
    prompt: str = ""
    answer: str = ""
    text: str = ""

    @property
    def is_chat(self) -> bool:
        return self.kind != "document"


def read_examples(path: Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in path.read_text("utf-8").splitlines() if line.strip()]


def encode(example: Example, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): a chat example through the chat template, learning only the answer; text as is.

    The loss on a chat example falls on the answer (and its end marker) only: the model is taught to answer, not
    to ask. Document text is learnt whole, followed by the end-of-text token.
    """
    if example.is_chat:
        turn = [{"role": "user", "content": example.prompt}]
        prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*turn, {"role": "assistant", "content": example.answer}], tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [IGNORE] * n_prompt + ids[n_prompt:]
    else:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
    return ids[:max_len], labels[:max_len]
