"""The asker's language: detected per message (py3langid ships its model), used to answer in that language.

The extractive backend has no generator, so its few fixed sentences are translated here; quoted passages stay
in the language of their document.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TRADITIONAL = set("們這個來為會說問題時開關於與發現經過對應實際資料體點機還裡樣檔嗎麼")
_SIMPLIFIED = set("们这个来为会说问题时开关于与发现经过对应实际资料体点机还里样档吗么")

NAMES = {
    "en": "English", "zh": "Simplified Chinese", "zh-tw": "Traditional Chinese", "ja": "Japanese",
    "ko": "Korean", "es": "Spanish", "fr": "French", "de": "German", "lt": "Lithuanian", "tl": "Tagalog",
    "ne": "Nepali", "mn": "Mongolian", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "vi": "Vietnamese",
}  # fmt: skip

PHRASES: dict[str, dict[str, str]] = {
    "from_docs": {
        "en": "From the documents shared here:",
        "zh": "根据这里共享的文档：",
        "zh-tw": "根據這裡分享的文件：",
        "ja": "ここで共有された文書によると：",
        "ko": "여기에 공유된 문서에 따르면:",
        "es": "Según los documentos compartidos aquí:",
        "fr": "D'après les documents partagés ici :",
        "lt": "Pagal čia pasidalytus dokumentus:",
        "tl": "Ayon sa mga dokumentong ibinahagi rito:",
        "ne": "यहाँ साझा गरिएका कागजातहरूअनुसार:",
        "mn": "Энд хуваалцсан баримтуудын дагуу:",
    },
    "nothing_found": {
        "en": "I found nothing about that in the documents shared here. Share the document that has the answer "
        "with me (or ask in the channel where it was shared) and ask again.",
        "zh": "在这里共享的文档中没有找到相关内容。请把包含答案的文档分享给我，然后再问一次。",
        "zh-tw": "在這裡分享的文件中找不到相關內容。請把包含答案的文件分享給我，然後再問一次。",
        "ja": "ここで共有された文書には該当する内容が見つかりませんでした。答えを含む文書を共有してから、もう一度質問してください。",
        "ko": "여기에 공유된 문서에서 관련 내용을 찾지 못했습니다. 답이 있는 문서를 공유한 뒤 다시 질문해 주세요.",
        "es": "No encontré nada sobre eso en los documentos compartidos aquí. Compárteme el documento que tiene la "
        "respuesta y vuelve a preguntar.",
        "fr": "Je n'ai rien trouvé à ce sujet dans les documents partagés ici. Partagez-moi le document qui contient "
        "la réponse, puis reposez la question.",
        "lt": "Čia pasidalytuose dokumentuose apie tai nieko neradau. Pasidalykite dokumentu, kuriame yra "
        "atsakymas, ir paklauskite dar kartą.",
        "tl": "Wala akong nakitang tungkol diyan sa mga dokumentong ibinahagi rito. Ibahagi sa akin ang dokumentong "
        "may sagot at magtanong muli.",
        "ne": "यहाँ साझा गरिएका कागजातहरूमा यसबारे केही भेटिएन। उत्तर भएको कागजात मलाई साझा गर्नुहोस् र फेरि सोध्नुहोस्।",
        "mn": "Энд хуваалцсан баримтуудаас энэ талаар юу ч олдсонгүй. Хариулт бүхий баримтаа надад хуваалцаад "
        "дахин асууна уу.",
    },
    "no_domain_model": {
        "en": "I can only quote the shared documents right now: no domain model is configured, so I cannot "
        "answer questions about terminology or phrasing. Prefix a question with 'docs:' to search the documents.",
        "zh": "目前我只能引用共享的文档：尚未配置领域模型，因此无法回答术语或措辞方面的问题。在问题前加上 'docs:' 即可搜索文档。",
        "zh-tw": "目前我只能引用分享的文件：尚未設定領域模型，因此無法回答術語或措辭方面的問題。在問題前加上 'docs:' 即可搜尋文件。",
        "ja": "現在は共有文書の引用しかできません。ドメインモデルが設定されていないため、用語や言い回しの質問には答えられません。"
        "文書を検索するには質問の前に 'docs:' を付けてください。",
        "es": "Ahora solo puedo citar los documentos compartidos: no hay un modelo de dominio configurado, así que no "
        "puedo responder preguntas de terminología o redacción. Empieza con 'docs:' para buscar en los documentos.",
        "fr": "Pour l'instant je ne peux que citer les documents partagés : aucun modèle de domaine n'est configuré, "
        "je ne peux donc pas répondre aux questions de terminologie ou de formulation. Commencez par 'docs:' pour "
        "chercher dans les documents.",
        "lt": "Kol kas galiu tik cituoti pasidalytus dokumentus: domeno modelis nesukonfigūruotas, todėl negaliu "
        "atsakyti į terminų ar formuluočių klausimus. Pradėkite klausimą žodžiu 'docs:', kad ieškočiau dokumentuose.",
        "tl": "Sa ngayon, makakapag-quote lang ako mula sa mga ibinahaging dokumento: walang naka-configure na domain "
        "model, kaya hindi ko masasagot ang mga tanong tungkol sa terminolohiya o pananalita. Simulan ang tanong "
        "sa 'docs:' para maghanap sa mga dokumento.",
    },
    "smalltalk": {
        "en": "Hi! I answer questions about the documents shared with me and about our domain. Share a document or "
        "ask a question; 'docs:' forces a document search and 'expert:' asks the domain expert.",
        "zh": "你好！我可以回答关于共享文档和我们业务领域的问题。分享文档或直接提问即可；'docs:' 强制搜索文档，'expert:' 询问领域专家。",
        "zh-tw": "你好！我可以回答關於分享文件和我們業務領域的問題。分享文件或直接提問即可；'docs:' 強制搜尋文件，'expert:' 詢問領域專家。",
        "ja": "こんにちは！共有された文書や私たちの分野について質問に答えます。'docs:' で文書検索、'expert:' で専門家モデルに質問できます。",
        "es": "¡Hola! Respondo preguntas sobre los documentos que me comparten y sobre nuestro dominio. 'docs:' fuerza "
        "una búsqueda en documentos y 'expert:' pregunta al experto.",
        "fr": "Bonjour ! Je réponds aux questions sur les documents partagés avec moi et sur notre domaine. 'docs:' "
        "force une recherche dans les documents, 'expert:' interroge l'expert.",
        "lt": "Labas! Atsakau į klausimus apie man pasidalytus dokumentus ir mūsų sritį. 'docs:' ieško dokumentuose, "
        "'expert:' klausia srities eksperto.",
        "tl": "Kumusta! Sinasagot ko ang mga tanong tungkol sa mga dokumentong ibinahagi sa akin at sa ating larangan. "
        "Ang 'docs:' ay naghahanap sa mga dokumento at ang 'expert:' ay nagtatanong sa eksperto.",
        "mn": "Сайн байна уу! Надад хуваалцсан баримтууд болон манай салбарын талаарх асуултад хариулна. 'docs:' "
        "баримтаас хайна, 'expert:' мэргэжилтнээс асууна.",
    },
}


@lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str:
    """An ISO code ("en", "zh", "zh-tw", ...); short or unclear messages count as English."""
    sample = re.sub(r"https?://\S+|`[^`]*`", " ", text)[:1000]
    if len(sample.strip()) < 3:
        return "en"
    code, prob = _identifier().classify(sample)
    if code == "zh":
        chars = set(sample)
        return "zh-tw" if len(chars & _TRADITIONAL) > len(chars & _SIMPLIFIED) else "zh"
    if prob < 0.5 and len(sample.split()) < 4:
        return "en"
    return str(code)


def phrase(key: str, language: str) -> str:
    """A fixed sentence in the asker's language, English when it has no translation yet."""
    table = PHRASES[key]
    return table.get(language) or table.get(language.split("-")[0]) or table["en"]


def language_name(code: str) -> str:
    return NAMES.get(code, code)
