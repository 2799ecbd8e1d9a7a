"""The semantic router: forced prefixes, clear messages in several languages, trivial input, the tie-breaker,
and the evaluation arithmetic. No services: the embedding model runs in-process."""

from __future__ import annotations

import json

import pytest

from agent.eval_routing import evaluate_routing, read_routing_data
from agent.routing import ROUTES, RouteDecision, SemanticRouter, load_examples, parse_forced_route
from agent.types import Route


@pytest.fixture(scope="module")
def router() -> SemanticRouter:
    from agent.knowledge.embeddings import get_embeddings

    return SemanticRouter(get_embeddings("use-multilingual"))


@pytest.mark.parametrize(
    ("text", "route", "rest"),
    [
        ("docs: where is the VPN guide?", "retrieve", "where is the VPN guide?"),
        ("  DOC:port of the API", "retrieve", "port of the API"),
        ("Expert: what is a tensor?", "domain", "what is a tensor?"),
        ("chat: hi", "smalltalk", "hi"),
        ("docs：部署文档在哪里", "retrieve", "部署文档在哪里"),
        ("what do the docs: say", None, "what do the docs: say"),
        ("  plain question ", None, "plain question"),
        ("doctor: are you in?", None, "doctor: are you in?"),
    ],
)
def test_parse_forced_route(text, route, rest):
    assert parse_forced_route(text) == (route, rest)


def test_examples_cover_every_route_and_many_languages():
    examples = load_examples()
    for route in ROUTES:
        mine = [e for e in examples if e.route == route]
        assert 40 <= len(mine) <= 80, route
        assert sum(e.language != "en" for e in mine) >= len(mine) / 3, route
    assert len({e.language for e in examples}) >= 8


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Which port does the Grafana dashboard use in our staging setup?", "retrieve"),
        ("¿Dónde está el manual de instalación del cliente VPN?", "retrieve"),
        ("社内の休暇申請の手順はどこに書いてありますか？", "retrieve"),
        ("What is a neural network?", "domain"),
        ("Quelle est la différence entre un processus et un thread ?", "domain"),
        ("Rewrite this sentence to sound more professional: 'our app is kinda fast now'", "domain"),
        ("什么是迁移学习？", "domain"),
        ("hello!", "smalltalk"),
        ("¡Buenos días a todos!", "smalltalk"),
        ("谢谢！", "smalltalk"),
    ],
)
def test_clear_messages_route_correctly(router, text, route):
    decision = router.decide(text)
    assert decision.route == route, decision.why
    assert 0.0 <= decision.confidence <= 1.0
    assert set(decision.scores) == set(ROUTES)
    assert abs(sum(decision.scores.values()) - 1.0) < 1e-3
    assert decision.why.startswith(f"closest to {route} example")


@pytest.mark.parametrize("text", ["", "   ", "?", "👍", "k"])
def test_empty_or_trivial_text_is_smalltalk(router, text):
    decision = router.decide(text)
    assert (decision.route, decision.confidence) == ("smalltalk", 1.0)


def test_forced_prefix_wins_over_the_model(router):
    decision = router.decide("docs: hello there")
    assert (decision.route, decision.confidence) == ("retrieve", 1.0)


def test_tie_breaker_is_asked_only_when_unsure(router):
    asked: list[str] = []

    def breaker(text: str) -> Route:
        asked.append(text)
        return "smalltalk"

    sure = SemanticRouter(router.embeddings, router.examples, tie_breaker=breaker, tie_margin=0.0)
    assert sure.decide("What is a neural network?").route == "domain"
    assert asked == []
    unsure = SemanticRouter(router.embeddings, router.examples, tie_breaker=breaker, tie_margin=1.01)
    decision = unsure.decide("What is a neural network?")
    assert decision.route == "smalltalk" and asked == ["What is a neural network?"]
    assert decision.why.startswith("tie-breaker chose smalltalk")


class _Scripted:
    """A router that answers from a table, to check the metric arithmetic exactly."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def decide(self, text: str, retrieval_score: float | None = None) -> RouteDecision:
        return RouteDecision(self.answers[text], 1.0, "scripted", {})  # type: ignore[arg-type]


def test_evaluate_routing_arithmetic():
    rows = [
        {"text": "a", "route": "retrieve"},
        {"text": "b", "route": "retrieve"},
        {"text": "c", "route": "retrieve"},
        {"text": "d", "route": "domain"},
        {"text": "e", "route": "domain"},
        {"text": "f", "route": "smalltalk"},
    ]
    predicted = {"a": "retrieve", "b": "retrieve", "c": "domain", "d": "domain", "e": "retrieve", "f": "smalltalk"}
    result = evaluate_routing(_Scripted(predicted), rows)
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["confusion"] == {
        "retrieve": {"retrieve": 2, "domain": 1, "smalltalk": 0},
        "domain": {"retrieve": 1, "domain": 1, "smalltalk": 0},
        "smalltalk": {"retrieve": 0, "domain": 0, "smalltalk": 1},
    }
    assert result["per_route"]["retrieve"] == {
        "precision": pytest.approx(2 / 3, abs=1e-4),
        "recall": pytest.approx(2 / 3, abs=1e-4),
        "support": 3,
    }
    assert result["per_route"]["domain"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert result["per_route"]["smalltalk"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert [(e["text"], e["gold"], e["predicted"]) for e in result["errors"]] == [
        ("c", "retrieve", "domain"),
        ("e", "domain", "retrieve"),
    ]
    assert result["ms_per_message"] >= 0


def test_evaluate_routing_never_predicted_route_has_zero_precision():
    result = evaluate_routing(_Scripted({"x": "retrieve"}), [{"text": "x", "route": "domain"}])
    assert result["per_route"]["domain"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert result["per_route"]["smalltalk"] == {"precision": 0.0, "recall": 0.0, "support": 0}
    with pytest.raises(ValueError, match="no labelled"):
        evaluate_routing(_Scripted({}), [])


def test_read_routing_data(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"text": "hi", "route": "smalltalk"}) + "\n\n" + json.dumps({"text": "x", "route": "domain"}) + "\n"
    )
    assert [r["route"] for r in read_routing_data(good)] == ["smalltalk", "domain"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hi", "route": "smalltalk"}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        read_routing_data(bad)
    bad.write_text(json.dumps({"text": "hi", "route": "gossip"}) + "\n")
    with pytest.raises(ValueError, match=r":1: 'route' must be one of"):
        read_routing_data(bad)
    bad.write_text(json.dumps({"route": "domain"}) + "\n")
    with pytest.raises(ValueError, match=r":1: missing string field 'text'"):
        read_routing_data(bad)


def test_router_on_a_small_hand_made_set(router):
    rows = [
        {"text": "Where is the expense policy for contractors?", "route": "retrieve"},
        {"text": "What does 'latency budget' mean?", "route": "domain"},
        {"text": "hey, thanks!", "route": "smalltalk"},
    ]
    result = evaluate_routing(router, rows)
    assert result["accuracy"] == 1.0, result["errors"]


def test_failing_or_nonsense_tie_breaker_keeps_the_embedding_choice(router):
    def broken(text: str) -> Route:
        raise RuntimeError("LLM down")

    def nonsense(text: str) -> Route:
        return "gossip"  # type: ignore[return-value]

    for breaker in (broken, nonsense):
        unsure = SemanticRouter(router.embeddings, router.examples, tie_breaker=breaker, tie_margin=1.01)
        assert unsure.decide("What is a neural network?").route == "domain"


def test_strong_retrieval_score_settles_only_unsure_calls(router):
    nudged = SemanticRouter(router.embeddings, router.examples, tie_margin=1.01, retrieval_threshold=0.5)
    assert nudged.decide("What is a neural network?", retrieval_score=0.9).route == "retrieve"
    assert nudged.decide("What is a neural network?", retrieval_score=0.1).route == "domain"
    assert router.decide("What is a neural network?", retrieval_score=0.9).route == "domain"  # off by default
