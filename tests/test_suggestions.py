"""Suggested prompts speak the asker's Slack language, the product's languages included."""

from __future__ import annotations

from uuid import uuid4

import pytest

from agent.language import language_of_locale


@pytest.mark.parametrize(
    ("locale", "language"),
    [("de-DE", "de"), ("zh-CN", "zh"), ("zh-TW", "zh-tw"), ("zh_HK", "zh-tw"), ("ja-JP", "ja"), ("ko-KR", "ko"),
     ("es-LA", "es"), ("pt-BR", "pt"), ("ru-RU", "en"), (None, "en"), ("", "en")],
)  # fmt: skip
def test_a_slack_locale_picks_the_language_of_the_suggestions(locale: str | None, language: str) -> None:
    assert language_of_locale(locale) == language


def test_suggestions_are_written_in_the_askers_language(services) -> None:
    import redis

    from agent.learning import CuratedItem, LearningStore
    from agent.types import Audience, DocumentInfo
    from bot.suggestions import suggestions

    tenant = f"T{uuid4().hex[:8]}"
    learning = LearningStore(redis.Redis.from_url(services.effective_redis_url))
    learning.add_curated(CuratedItem("term", "QLoRA", "4-bit LoRA.", tenant, "*", "test", at=1.0))
    learning.add_curated(CuratedItem("term", "Hidden", "Taught elsewhere.", tenant, "C9", "test", at=2.0))
    doc = DocumentInfo("d1", "guide.md", "Шилжүүлгийн журам", "*", 3, "h", 1.0)
    offered = suggestions(learning, [doc], Audience(tenant, "C1"), "mn")
    assert [s.message for s in offered] == [
        "QLoRA гэж юу гэсэн үг вэ?",  # the term taught tenant-wide; the one taught in C9 stays there
        "Шилжүүлгийн журам-ийн гол санаанууд юу вэ?",
        "Та надад юугаар туслах вэ?",
    ]
    assert offered[-1].title == "Та юу хийж чадах вэ?"
