"""Which route a chat message takes: `retrieve` (facts from shared documents), `domain` (the domain model's own
expertise: terms, explanations, rephrasing) or `smalltalk`.

The router is semantic and multilingual: one embedding per message (the knowledge base's model), compared with
a few hundred labelled examples (`routing_examples.yaml`) by two cheap classifiers whose probabilities are
averaged: a kNN vote (mean cosine of the k nearest examples of each route, softmaxed) and a small softmax
regression trained on the example embeddings at start. Chosen by measurement (`agent/eval_routing.py` on the
labelled development messages, and cross-validation on the examples): the average was steadier than either
alone, and nearest-centroid or hand-written cues (digits, quotes, length) did no better.
Users can force a route with a prefix (`docs:`, `expert:`, `chat:`), and an optional tie-breaker (e.g. an LLM)
decides only the messages the embedding is unsure about.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import yaml
from langchain_core.embeddings import Embeddings

from agent.knowledge.embeddings import unit_rows
from agent.types import Route

log = logging.getLogger(__name__)

ROUTES: tuple[Route, ...] = get_args(Route)
EXAMPLES_PATH = Path(__file__).with_name("routing_examples.yaml")

_PREFIXES: dict[str, Route] = {"docs": "retrieve", "doc": "retrieve", "expert": "domain", "chat": "smalltalk"}
# A full-width colon too: CJK input methods type it by default.
_PREFIX_RE = re.compile(r"^\s*(docs|doc|expert|chat)\s*[:：]", re.IGNORECASE)


def parse_forced_route(text: str) -> tuple[Route | None, str]:
    """A user's explicit choice of route (`docs:` / `doc:`, `expert:`, `chat:`) and the message without it."""
    match = _PREFIX_RE.match(text)
    if match is None:
        return None, text.strip()
    return _PREFIXES[match.group(1).lower()], text[match.end() :].strip()


@dataclass(frozen=True)
class RoutingExample:
    text: str
    route: Route
    language: str


@dataclass
class RouteDecision:
    """A route with how sure the router is (0..1), a one-line reason a person can read, and each route's score."""

    route: Route
    confidence: float
    why: str
    scores: dict[str, float] = field(default_factory=dict)


def load_examples(path: Path | None = None) -> list[RoutingExample]:
    """Read `{route: {language: [text, ...]}}`; a wrong route or an empty text fails here rather than skewing
    the router silently."""
    path = path or EXAMPLES_PATH
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of route -> language -> list of texts")
    examples: list[RoutingExample] = []
    for route, by_language in data.items():
        if route not in ROUTES:
            raise ValueError(f"{path}: unknown route {route!r}; expected one of {list(ROUTES)}")
        if not isinstance(by_language, dict):
            raise ValueError(f"{path}: {route}: expected a mapping of language -> list of texts")
        for language, texts in by_language.items():
            if not isinstance(texts, list):
                raise ValueError(f"{path}: {route}.{language}: expected a list of texts")
            for text in texts:
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{path}: {route}.{language}: every example must be a non-empty string")
                examples.append(RoutingExample(text.strip(), route, str(language)))
    missing = [r for r in ROUTES if not any(e.route == r for e in examples)]
    if missing:
        raise ValueError(f"{path}: no examples for route(s) {missing}")
    return examples


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def train_softmax_regression(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-3, steps: int = 1000, lr: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent: a few hundred examples train in well
    under a second, deterministically, without scikit-learn."""
    n, dim = x.shape
    w = np.zeros((dim, n_classes), dtype=np.float64)
    b = np.zeros(n_classes, dtype=np.float64)
    target = np.eye(n_classes)[y]
    x64 = x.astype(np.float64)
    for _ in range(steps):
        grad = (_softmax(x64 @ w + b) - target) / n
        w -= lr * (x64.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return w, b


@dataclass(frozen=True)
class _Model:
    matrix: np.ndarray  # (n_examples, dim), L2-normalised
    labels: np.ndarray  # route index per example
    weights: np.ndarray
    bias: np.ndarray


_MODELS: dict[tuple[str, str], _Model] = {}
_MODELS_LOCK = threading.Lock()


def _model_key(embeddings: Embeddings, examples: Sequence[RoutingExample]) -> tuple[str, str]:
    name = getattr(embeddings, "name", "") or f"{type(embeddings).__qualname__}@{id(embeddings)}"
    digest = hashlib.sha256("\n".join(f"{e.route}\t{e.text}" for e in examples).encode()).hexdigest()
    return str(name), digest


def _build_model(embeddings: Embeddings, examples: Sequence[RoutingExample]) -> _Model:
    """Embed the examples and fit the regression once per process, model and example set (seconds, not per
    message)."""
    key = _model_key(embeddings, examples)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            matrix = unit_rows(np.asarray(embeddings.embed_documents([e.text for e in examples]), dtype=np.float32))
            labels = np.array([ROUTES.index(e.route) for e in examples])
            weights, bias = train_softmax_regression(matrix, labels, len(ROUTES))
            model = _Model(matrix, labels, weights, bias)
            _MODELS[key] = model
        return model


def _is_trivial(text: str) -> bool:
    """Nothing to route: empty, one character, or no letter or digit at all (emoji, punctuation)."""
    return len(text) < 2 or not any(ch.isalnum() for ch in text)


def _one_hot(route: Route) -> dict[str, float]:
    return {r: float(r == route) for r in ROUTES}


class SemanticRouter:
    """Routes a message by its embedding's similarity to labelled examples.

    `decide` costs one embedding and a few small matrix products. `confidence` is the gap between the two most
    probable routes (0: a coin toss, 1: certain; in cross-validation on the examples, decisions under 0.15 were
    right about half the time, over 0.7 about 97%). Below `tie_margin` the optional `tie_breaker` (text -> route
    or None, e.g. an LLM) is asked; failing that, a `retrieval_score` at or above `retrieval_threshold` (the
    caller's top search score, on its own scale) tips an unsure retrieve-vs-other call to retrieve. That nudge is
    off by default: with the top dense cosine on the development corpus it did not help, because the domain's
    concepts are also discussed in its documents.
    """

    def __init__(
        self,
        embeddings: Embeddings,
        examples: Sequence[RoutingExample] | None = None,
        *,
        k: int = 5,
        temperature: float = 0.05,
        knn_weight: float = 0.5,
        tie_margin: float = 0.15,
        tie_breaker: Callable[[str], Route | None] | None = None,
        retrieval_threshold: float | None = None,
    ) -> None:
        self.embeddings = embeddings
        self.examples: list[RoutingExample] = list(examples) if examples is not None else load_examples()
        if not self.examples:
            raise ValueError("the router needs examples")
        self.k = k
        self.temperature = temperature
        self.knn_weight = knn_weight
        self.tie_margin = tie_margin
        self.tie_breaker = tie_breaker
        self.retrieval_threshold = retrieval_threshold
        self._model = _build_model(embeddings, self.examples)

    def probabilities(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-route probabilities for one normalised embedding, and its cosine to every example."""
        model = self._model
        sims = model.matrix @ vector.astype(np.float32)
        knn = np.empty(len(ROUTES))
        for i in range(len(ROUTES)):
            route_sims = sims[model.labels == i]
            top = route_sims[np.argsort(route_sims)[::-1][: self.k]]
            knn[i] = float(top.mean()) if top.size else -1.0
        p_knn = _softmax(knn / self.temperature)
        p_reg = _softmax(vector.astype(np.float64) @ model.weights + model.bias)
        return self.knn_weight * p_knn + (1.0 - self.knn_weight) * p_reg, sims

    def decide(self, text: str, retrieval_score: float | None = None) -> RouteDecision:
        """The route for one message; a `docs:` / `expert:` / `chat:` prefix wins without asking the model."""
        forced, text = parse_forced_route(text)
        if forced is not None:
            return RouteDecision(forced, 1.0, f"forced by the user's prefix ({forced})", _one_hot(forced))
        if _is_trivial(text):
            return RouteDecision("smalltalk", 1.0, "empty or too short to be a question", _one_hot("smalltalk"))

        vector = unit_rows(np.asarray(self.embeddings.embed_query(text), dtype=np.float32))
        probs, sims = self.probabilities(vector)
        order = np.argsort(probs)[::-1]
        best, second = int(order[0]), int(order[1])
        route, margin = ROUTES[best], float(probs[best] - probs[second])
        scores: dict[str, float] = {r: round(float(p), 4) for r, p in zip(ROUTES, probs, strict=True)}
        why = self._explain(route, ROUTES[second], sims)

        if margin < self.tie_margin:
            chosen = self._ask_tie_breaker(text)
            if chosen is not None:
                return RouteDecision(
                    chosen, round(margin, 4), f"tie-breaker chose {chosen} (router unsure: {why})", scores
                )
            if (
                retrieval_score is not None
                and self.retrieval_threshold is not None
                and retrieval_score >= self.retrieval_threshold
                and "retrieve" in (ROUTES[best], ROUTES[second])
            ):
                why = f"strong document match ({retrieval_score:.2f}) settles an unsure call: {why}"
                return RouteDecision("retrieve", round(margin, 4), why, scores)
        return RouteDecision(route, round(margin, 4), why, scores)

    def _ask_tie_breaker(self, text: str) -> Route | None:
        """The tie-breaker's route, or None when there is none, it abstains, fails or answers nonsense: routing
        must never fail a message, so the embedding's choice stands then."""
        if self.tie_breaker is None:
            return None
        try:
            chosen = self.tie_breaker(text)
        except Exception:
            log.warning("routing tie-breaker failed; keeping the embedding's choice", exc_info=True)
            return None
        return chosen if chosen in ROUTES else None

    def _explain(self, route: Route, runner_up: Route, sims: np.ndarray) -> str:
        """Name the closest example of the chosen route and the best similarity the runner-up reached."""
        labels = self._model.labels
        own = np.where(labels == ROUTES.index(route))[0]
        other = np.where(labels == ROUTES.index(runner_up))[0]
        nearest = int(own[np.argmax(sims[own])])
        example = self.examples[nearest].text
        if len(example) > 80:
            example = example[:79] + "…"
        return (
            f"closest to {route} example {example!r} ({float(sims[nearest]):.2f} vs {runner_up} "
            f"{float(sims[other].max()):.2f})"
        )
