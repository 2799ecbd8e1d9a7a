"""What kind of answer a question wants, and which sentences look like that kind of answer, in every language
we serve.

The multilingual embedding scores a sentence that restates the question's topic as high as the sentence that
answers it. Some questions say what their answer looks like: "how many" wants a figure; "why", "can we",
"should we ... or ..." want a sentence that gives a reason, a limit or a recommendation ("only ...", "is not
supported", "we recommend ... because ..."). These patterns are deliberately short lists of common words, not
a grammar: a cue only tips the balance between sentences that are otherwise close.
"""

from __future__ import annotations

import re

_I = re.IGNORECASE

QUANTITY = re.compile(
    r"\b(?:how (?:many|much|big|large|long|often|fast)|what (?:size|version|port)|which (?:versions?|port|region))\b"
    r"|\bcu[aá]nt[oa]s?\b|\bcombien\b|\bkiek\b|\bilan\b|\bgaano\b|\bхэд|कति"
    r"|多少|多大|多久|几|幾|いくつ|どのくらい|何[個人台GgMm]|몇|얼마"
    r"|(?:哪個|哪个|什麼|什么)(?:連接埠|端口|版本)|(?:どの|何番の?)ポート|어떤 포트|qu[ée] puerto|quel port"
    r"|どのバージョン|어떤 버전|qu[ée] versi[óo]n|quelle version|kuri(?:ą|a|os) versij|anong bersyon|ямар хувилбар"
    r"|कुन (?:संस्करण|भर्सन)",
    _I,
)
"""A question asking for a figure: a sentence with a figure is likelier the answer."""

VERDICT = re.compile(
    r"^(?:is|are|can|could|does|do|did|should|will|would|may|must|has|have)\b"
    r"|\b(?:why|should (?:i|we)|is it (?:true|possible))\b"
    r"|\bwon't\b|\bcan't\b|\bor (?:use|our|the|a|an)\b"
    r"|por qu[ée]|\bpuedo\b|\bpodemos\b|\bse puede\b|\bdebo\b|\bdebemos\b"
    r"|pourquoi|\bpuis-je\b|\bpeut-on\b|\bfaut-il\b|\best-ce que\b|\bdoit-on\b"
    r"|kodėl|\bar galima\b|\bar galiu\b|\bar reikia\b|\bbakit\b|\bmaaari\b|\bpuwede\b|\bdapat ba\b"
    r"|яагаад|болох уу|किन |सकिन्छ\?|सक्छ\?"
    r"|为什么|為什麼|为何|為何|可以.*[吗嗎]|能.*[吗嗎]|是否|应该|應該|还是|還是"
    r"|なぜ|どうして|できますか|べきですか|왜|할 수 있|해야 하",
    _I,
)
"""A question that wants a verdict (yes or no, a reason, a choice) rather than a fact."""

VERDICT_SENTENCE = re.compile(
    r"\b(?:only|not|cannot|can't|won't|isn't|aren't|doesn't|don't|unsupported|because|since|due to|recommend"
    r"|recommended|instead|must|requires?|best|better|choice|prefer\w*)\b|n't\b"
    r"|\b(?:s[oó]lo|solamente|únicamente|no|porque|debido|recomienda|recomendamos|mejor|elecci[óo]n)\b"
    r"|\b(?:seulement|uniquement|ne|pas|parce que|car|recommand\w*|meilleur\w*|choix)\b"
    r"|\b(?:tik|ne|nes|kadangi|rekomenduoj\w*|geriau\w*|pasirinkim\w*)\b"
    r"|\b(?:lamang|hindi|dahil|inirerekomenda|pinakamahusay|mas mabuti)\b"
    r"|зөвхөн|биш|учир|зөвлө|хамгийн сайн|сонголт"
    r"|मात्र|छैन|हुँदैन|किनभने|सिफारिस|उत्तम|राम्रो"
    r"|仅|只|僅|不(?:支持|支援|能|可|会|會|需要|是)|没有|沒有|因为|因為|由于|由於|建议|建議|推荐|推薦|最佳|更好|選擇|选择"
    r"|のみ|だけ|ない|ません|ため|ので|推奨|お勧め|おすすめ|最適|選択"
    r"|만 |않|없|때문|권장|최선|더 나은|선택",
    _I,
)
"""A sentence that gives a verdict: a limit, a negation, a reason or a recommendation."""


def wants_figure(question: str) -> bool:
    return bool(QUANTITY.search(question))


def wants_verdict(question: str) -> bool:
    """Each sentence of the question on its own: "We fine-tuned with QLoRA. Can Olive convert it?" asks a yes or
    no question in its second sentence, while "How can I pass my token?" asks how, not whether."""
    return any(VERDICT.search(part.strip()) for part in _QUESTION_PARTS.split(question))


_QUESTION_PARTS = re.compile(r"(?<=[.!?。！？])\s*")


def gives_verdict(sentence: str) -> bool:
    return bool(VERDICT_SENTENCE.search(sentence))


ABOUT_THE_PAGE = re.compile(
    r"^(?:in this (?:tutorial|sample|guide|section|lab|article|e2e sample|example)|this (?:tutorial|sample|guide"
    r"|guideline|section|lab|article|document|project|repository|notebook|example)\b|let(?:'|’)s\b|let us\b"
    r"|welcome\b|here,? we\b|we will\b|you will learn\b|in summary\b|in conclusion\b)"
    r"|^(?:en este (?:tutorial|ejemplo)|este (?:tutorial|ejemplo)|dans ce (?:tutoriel|guide)|ce (?:tutoriel|guide))\b"
    r"|^(?:本教程|在本教程|本文|本指南|本範例|本示例|この(?:チュートリアル|ガイド|サンプル)|이 (?:튜토리얼|가이드))",
    _I,
)
"""A sentence about the page itself ("In this tutorial, you will ...", "Let's explore ..."): it restates the
topic, so it matches the question well, but it answers nothing."""

POINTER = re.compile(
    r"\b(?:click here|(?:learn|read) more(?: about| at| here| in|\W*$)|see here|for more (?:information|details))\b"
    r"|haga clic aquí|más información|cliquez ici|en savoir plus"
    r"|点击这里|點擊這裡|了解更多|詳しくは|ここをクリック|여기를 클릭",
    _I,
)
"""A sentence that only points elsewhere ("Read this guideline to set ONNX Runtime GenAI for Windows GPU click
here"): the link it stood for is gone from the quote, and what is left restates the topic."""


def about_the_page(sentence: str) -> bool:
    """About the page itself, or pointing to another one: either way it restates the topic and answers nothing."""
    stripped = sentence.strip()
    return bool(ABOUT_THE_PAGE.search(stripped) or POINTER.search(stripped))
