"""The asker's language: detected per message (script first, then py3langid), used to answer in that language.

The extractive backend has no generator, so its few fixed sentences are translated (`phrases.yaml`); quoted
passages stay in the language of their document.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

_TRADITIONAL = set(
    "們這個來為會說問題時開關於與發現經過對應實際資料體點機還裡樣檔嗎麼該變應專業務週調語員號們們給當讓從後種麼們該處較輕網頁線設執實驗載裝邊電腦書學習幫寫記錄據"
)
_SIMPLIFIED = set(
    "们这个来为会说问题时开关于与发现经过对应实际资料体点机还里样档吗么该变应专业务周调语员号给当让从后种处较轻网页线设执实验载装边电脑书学习帮写记录据"
)

NAMES = {
    "en": "English", "zh": "Simplified Chinese", "zh-tw": "Traditional Chinese", "ja": "Japanese",
    "ko": "Korean", "es": "Spanish", "fr": "French", "de": "German", "lt": "Lithuanian", "tl": "Tagalog",
    "ne": "Nepali", "mn": "Mongolian", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "vi": "Vietnamese",
}  # fmt: skip

SUPPORTED = ("en", "zh", "zh-tw", "ja", "ko", "es", "fr", "lt", "tl", "ne", "mn")
"""Languages with every reply phrase translated and identification tested on short questions."""
ENDONYMS = {
    "en": "English", "zh": "简体中文", "zh-tw": "繁體中文", "ja": "日本語", "ko": "한국어", "es": "español",
    "fr": "français", "lt": "lietuvių", "tl": "Tagalog", "ne": "नेपाली", "mn": "монгол",
}  # fmt: skip
_LATIN = ("en", "es", "fr", "lt", "tl", "de", "pt", "it", "vi")
"""py3langid is restricted to these for Latin-script text: with all 97 of its languages, short questions land
on look-alikes (Tagalog as Indonesian, Spanish as Galician)."""
_SCRIPT = {
    "hangul": re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]"),
    "kana": re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]"),
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "devanagari": re.compile(r"[\u0900-\u097f]"),
    "cyrillic": re.compile(r"[\u0400-\u04ff]"),
}
_LETTER = re.compile(r"[^\W\d_]")
_HINDI = re.compile(r"(?<![\u0900-\u097f])(?:है|हैं|में|क्या|की|का|और|नहीं|कितने|कैसे)(?![\u0900-\u097f])")
_NEPALI = re.compile(r"(?:छ|छन्|हो|हुन्छ|सकिन्छ|गर्न|गर्दा|कति|मात्र|भएको|गरिएको|लागि|पनि|को|मा)(?![\u0900-\u097f])")
_MONGOLIAN = re.compile(r"[өүӨҮ]")
_PHRASES_PATH = Path(__file__).with_name("phrases.yaml")


@lru_cache(maxsize=1)
def phrases() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = yaml.safe_load(_PHRASES_PATH.read_text(encoding="utf-8"))
    return data


@lru_cache(maxsize=4)
def _identifier(languages: tuple[str, ...] = ()) -> Any:
    """py3langid's model, restricted to `languages` when given (one instance per restriction)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        identifier.set_languages(list(languages))
    return identifier


def _chinese_variant(sample: str) -> str:
    chars = set(sample)
    return "zh-tw" if len(chars & _TRADITIONAL) > len(chars & _SIMPLIFIED) else "zh"


def detect_language(text: str) -> str:
    """An ISO code ("en", "zh", "zh-tw", "ne", ...); short or unclear messages count as English.

    The script decides first (Hangul, kana, Han, Devanagari, Cyrillic), because a short question in Nepali
    or Mongolian is mostly product names in Latin letters that would otherwise outvote it; py3langid then
    decides among the languages of that script that we support. Close variants map to what we support:
    Hindi-looking Devanagari with Nepali function words is Nepali, Cantonese (`yue`) is Chinese.
    """
    sample = re.sub(r"https?://\S+|`[^`]*`", " ", text)[:1000]
    if len(sample.strip()) < 3:
        return "en"
    letters = max(len(_LETTER.findall(sample)), 1)
    counts = {name: len(pattern.findall(sample)) for name, pattern in _SCRIPT.items()}
    # A Han character carries a word, a Latin letter a fraction of one: weigh CJK up before comparing.
    if counts["hangul"] * 3 >= letters * 0.3 and counts["hangul"] >= counts["kana"]:
        return "ko"
    if counts["kana"] and (counts["kana"] + counts["han"]) * 3 >= letters * 0.3:
        return "ja"
    if counts["han"] * 3 >= letters * 0.3:
        return _chinese_variant(sample)
    if counts["devanagari"] >= letters * 0.3:
        if len(_HINDI.findall(sample)) > len(_NEPALI.findall(sample)):
            return "hi"
        return "ne"
    if counts["cyrillic"] >= letters * 0.3:
        if _MONGOLIAN.search(sample):
            return "mn"
        return str(_identifier(("mn", "ru", "uk", "bg", "kk")).classify(sample)[0])
    code, prob = _identifier(_LATIN).classify(sample)
    if prob < 0.5 and len(sample.split()) < 3:
        return "en"
    return str(code)


def phrase(key: str, language: str, **values: object) -> str:
    """A fixed sentence in the asker's language (English when it has no translation), placeholders filled."""
    table = phrases()[key]
    text = table.get(language) or table.get(language.split("-")[0]) or table["en"]
    return text.format(**values) if values else text


def language_of_locale(locale: str | None) -> str:
    """A chat platform's locale as a phrase language: Slack's "de-DE" -> "de", Teams' "zh-TW" -> "zh-tw".

    Here, not in bot/, so that both surfaces and agent-free code share it; a language without suggested prompts
    (the widest phrase set) falls back to English."""
    code = (locale or "en").replace("_", "-").lower()
    if code in ("zh-tw", "zh-hk", "zh-hant"):
        return "zh-tw"
    base = code.split("-", 1)[0]
    return base if base in phrases()["suggest_term"] else "en"


def language_name(code: str) -> str:
    return NAMES.get(code, code)
