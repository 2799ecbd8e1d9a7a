"""A synthetic night's data mix of realistic lengths, for the training bench, the GPU check and the tests.

Speed and padding depend on how long the examples are, not on what they say, so the mix is random words in the
shapes a tenant's material takes (lengths in words):

- curated **terms** (a 1-3 word term, a 6-25 word definition): each becomes two questions and one glossary line,
  as `workers/training/data.py::make_dataset` makes them;
- curated **Q&A** (6-15 word question, 15-60 word answer);
- **👍 answers** the bot gave (6-20 word question, 40-150 word answer);
- **document passages**: ~1,000-character chunks as the knowledge base cuts them, some shorter (a section's end).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from workers.training.examples import TRAIN_TERM_PROMPTS, Example

_VOCABULARY = (
    "the of and to in is that for on with as by at from this be are or it an was which will can our your we "
    "team customer order invoice payment release deploy server service account access policy report budget "
    "contract request approval manager review quarter month week day system data backup network security "
    "password laptop office travel expense refund shipment warehouse product price discount support ticket "
    "incident outage alert engineer design document meeting project deadline schedule holiday benefit salary "
    "training onboarding handbook process step rule limit plan goal metric revenue cost margin forecast risk "
    "compliance audit vendor supplier partner region market launch feature roadmap backlog sprint standup "
    "monitoring dashboard latency uptime capacity storage database migration upgrade version license renewal"
)
_WORDS = tuple(_VOCABULARY.split())

DEFAULT_MIX = {"terms": 60, "qa": 30, "helpful": 30, "passages": 80}
"""Item counts of the default mix (320 training examples; scaled by `scale`)."""


@dataclass(frozen=True)
class MixItems:
    terms: list[tuple[str, str]]
    qa: list[tuple[str, str]]
    helpful: list[tuple[str, str]]
    passages: list[tuple[str, str]]
    """(document id, passage text)"""


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _sentence(rng: random.Random, low: int, high: int) -> str:
    text = _words(rng, low, high)
    return text[:1].upper() + text[1:] + "."


def _passage(rng: random.Random) -> str:
    target = 1000 if rng.random() < 0.75 else rng.randint(200, 999)
    out = ""
    while len(out) < target:
        out += _sentence(rng, 8, 24) + " "
    return out[:target].rstrip()


def mix_items(scale: float = 1.0, *, seed: int = 0) -> MixItems:
    """The default mix's items, `scale` times as many of each kind."""
    rng = random.Random(seed)
    n = {kind: max(1, round(count * scale)) for kind, count in DEFAULT_MIX.items()}
    return MixItems(
        terms=[(f"{_words(rng, 1, 3)} {i}", _sentence(rng, 6, 25)) for i in range(n["terms"])],
        qa=[(_sentence(rng, 6, 15)[:-1] + "?", _sentence(rng, 15, 60)) for _ in range(n["qa"])],
        helpful=[(_sentence(rng, 6, 20)[:-1] + "?", _sentence(rng, 40, 150)) for _ in range(n["helpful"])],
        passages=[(f"doc-{i // 8}.md", _passage(rng)) for i in range(n["passages"])],
    )


def mix_examples(items: MixItems) -> list[Example]:
    """Training examples of the items, in make_dataset's forms (no hold-out: every item is trained on)."""
    out: list[Example] = []
    for term, definition in items.terms:
        out += [Example("term", "mix", p.format(term=term), definition) for p in TRAIN_TERM_PROMPTS]
        out.append(Example("document", "mix", text=f"{term}: {definition}"))
    out += [Example("qa", "mix", q, a) for q, a in items.qa]
    out += [Example("helpful", "mix", q, a) for q, a in items.helpful]
    out += [Example("document", f"document {doc}", text=text) for doc, text in items.passages]
    return out


def write_mix(path: Path, scale: float = 1.0, *, seed: int = 0) -> Path:
    """A train.jsonl of the default mix (what `workers.training.train.main` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = mix_examples(mix_items(scale, seed=seed))
    path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples), "utf-8")
    return path
