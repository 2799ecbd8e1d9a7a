"""Language identification on short chat questions, and the reply's phrases in every supported language."""

from __future__ import annotations

import pytest

from agent.language import SUPPORTED, detect_language, phrase, phrases

SHORT_QUESTIONS = [
    ("en", "How many GPUs does the model need?"),
    ("en", "Where is the VPN guide?"),
    ("es", "¿Cuántas GPU necesita el modelo?"),
    ("es", "¿Dónde está la guía de la VPN?"),
    ("fr", "Combien de GPU faut-il pour ce modèle ?"),
    ("fr", "Où est le guide du VPN ?"),
    ("lt", "Kiek GPU reikia šiam modeliui?"),
    ("lt", "Kur yra VPN vadovas?"),
    ("tl", "Ilang GPU ang kailangan ng modelo?"),
    ("tl", "Saan makikita ang gabay sa VPN?"),
    ("ne", "यो मोडेललाई कति वटा GPU चाहिन्छ?"),
    ("ne", "VPN गाइड कहाँ छ?"),
    ("mn", "Энэ загварт хэдэн GPU хэрэгтэй вэ?"),
    ("mn", "VPN-ий заавар хаана байна?"),
    ("zh", "这个模型需要多少个 GPU？"),
    ("zh", "VPN 指南在哪里？"),
    ("zh-tw", "這個模型需要多少個 GPU？"),
    ("zh-tw", "VPN 指南在哪裡？"),
    ("ja", "このモデルには GPU が何枚必要ですか？"),
    ("ja", "VPN のガイドはどこですか？"),
    ("ko", "이 모델에는 GPU가 몇 개 필요한가요?"),
    ("ko", "VPN 가이드는 어디에 있나요?"),
]


@pytest.mark.parametrize(("language", "question"), SHORT_QUESTIONS)
def test_short_questions_are_identified(language: str, question: str) -> None:
    assert detect_language(question) == language


def test_every_supported_language_is_tested() -> None:
    assert {lang for lang, _ in SHORT_QUESTIONS} == set(SUPPORTED)


def test_close_variants_map_to_supported_languages() -> None:
    # Hindi is told apart from Nepali by its function words; a Cantonese-looking line is still Chinese.
    assert detect_language("इस मॉडल को कितने GPU की ज़रूरत है?") == "hi"
    assert detect_language("QLoRA प्रयोग गर्दा मोडेल कति वटा GPU मा चल्छ?") == "ne"
    assert detect_language("呢個模型要幾多個 GPU 先夠？") in ("zh", "zh-tw")


@pytest.mark.parametrize("key", sorted(phrases()))
def test_every_phrase_exists_in_every_supported_language(key: str) -> None:
    table = phrases()[key]
    assert set(SUPPORTED) <= set(table), f"{key} lacks {set(SUPPORTED) - set(table)}"


def test_phrase_fills_placeholders_in_the_askers_language() -> None:
    assert (
        phrase("not_covered", "es", title="Guía VPN")
        == "Los documentos compartidos aquí no tratan eso. El más cercano es Guía VPN."
    )
    assert phrase("from_docs", "de") == phrase("from_docs", "en")  # no translation yet: English
