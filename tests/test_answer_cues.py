"""What a question wants and which sentence gives it (`agent/answer_cues.py`), and how the extractive scorer uses
it. The scorer runs here on an embedding that finds every sentence equally similar, so only the cues, the
question's words and the figures decide: what these tests pin down is the cue, not the embedding."""

from __future__ import annotations

import pytest
from langchain_core.embeddings import Embeddings

from agent.answer_cues import about_the_page, gives_verdict, wants_figure, wants_verdict
from agent.extractive import extract_answer
from agent.sentences import looks_like_code
from agent.types import Hit


class SameForAll(Embeddings):
    """Every text gets the same vector: cosine 1.0 between any question and any sentence."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]


def _hit(text: str, chunk: int = 0, heading: str = "") -> Hit:
    return Hit("guide.md", "guide.md", "Guide", heading, "C1", chunk, text, 1.0, similarity=0.9)


def _first_quote(question: str, *passages: str) -> str:
    extract = extract_answer(question, [_hit(p, n) for n, p in enumerate(passages)], SameForAll(), language="en")
    assert extract.covered
    return extract.quoted[0].text


@pytest.mark.parametrize(
    "question",
    [
        "Can we delete the fine-tuned model while it is deployed?",
        "We fine-tuned with QLoRA in Olive. Can Olive convert it to an int4 ONNX model?",
        "AI Studio won't let me delete my model. Why?",
        "Should we fine-tune on it or use RAG?",
        "¿Por qué tarda tanto la primera ejecución?",
        "Pourquoi le premier lancement est-il lent ?",
        "Kodėl pirmas paleidimas lėtas?",
        "Bakit mabagal ang unang pagtakbo?",
        "पहिलो पटक किन ढिलो चल्छ?",
        "为什么第一次运行很慢？",
        "應該微調還是用 RAG？",
        "初回起動が遅いのはなぜですか？",
        "왜 처음 실행이 느린가요?",
    ],
)
def test_questions_that_want_a_verdict(question):
    assert wants_verdict(question)


@pytest.mark.parametrize(
    "question",
    [
        "What roles does the Phi-3 prompt template have?",
        "Where is the exported model saved?",
        "How can I pass my Hugging Face token?",
        "What do I need to install first?",
        "Phi Silica とは何ですか？",
    ],
)
def test_questions_that_want_a_fact(question):
    assert not wants_verdict(question)


def test_sentences_that_give_a_verdict_in_several_languages():
    for sentence in (
        "Notice that Phi-3 supports only chat completions API.",
        "You can't delete a custom model if it has an existing deployment.",
        "We recommend the latter because it has a higher degree of autonomy.",
        "La conversión no está disponible por ahora.",
        "微调仅支持美国东部 2 区域。",
        "量子化は現在サポートされていません。",
    ):
        assert gives_verdict(sentence), sentence
    assert not gives_verdict("The exported model is saved in the model folder.")


def test_figures_ports_and_pages():
    assert wants_figure("How many GPUs does it need?") and wants_figure("AI Toolkit 的 REST API 用的是哪個連接埠？")
    assert not wants_figure("Why is the first run slow?")
    assert about_the_page("In this tutorial, you will deploy an evaluator.")
    assert about_the_page("Let’s explore how to fine-tune Phi-3 in the studio.")
    assert not about_the_page("You can delete a model from the model list.")
    # A sentence whose link is gone points nowhere: "click here" is what is left of it.
    assert about_the_page("Read this guideline to set ONNX Runtime GenAI for Windows GPU click here")
    assert about_the_page("Pour en savoir plus sur les quotas, cliquez ici.")
    assert not about_the_page("Click the Deploy button, then choose a region.")
    assert not about_the_page("Small models learn more from curated data than from scraped text.")


@pytest.mark.parametrize(
    "question",
    [
        "Which version of CUDA do I need?",
        "在 Windows 上用 GPU 跑 ONNX Runtime GenAI，需要装哪个版本的 CUDA 和 cuDNN？",
        "需要哪個版本的 Xcode？",
        "Xcode のどのバージョンが必要ですか？",
        "어떤 버전의 Xcode가 필요한가요?",
        "¿Qué versión de Python necesito?",
        "Quelle version de Python faut-il ?",
        "Kurios versijos Python reikia?",
        "Anong bersyon ng Python ang kailangan?",
        "Python-ийн ямар хувилбар хэрэгтэй вэ?",
        "कुन संस्करण चाहिन्छ?",
    ],
)
def test_which_version_wants_a_figure_in_every_language(question):
    assert wants_figure(question)


def test_a_verdict_question_is_answered_by_the_limit_not_by_the_topic():
    question = "AI Studio won't let me delete my fine-tuned model. Why?"
    topical = "In this tutorial, you will fine-tune a model in AI Studio and delete it from the studio afterwards."
    answer = "You can't delete a model while it has a deployment."
    assert _first_quote(question, topical, answer) == answer
    # Without the verdict cue the topical sentence, which holds more of the question's words, would lead.
    assert _first_quote("Describe the model studio tutorial for fine-tuned models.", topical, answer) == topical


def test_a_figure_the_question_already_names_earns_nothing():
    # One passage, so the same rank; the same question words in both. Only the second tells a new figure:
    # before, "Phi-3" counted as a figure too and the first (earlier) sentence led on a tie.
    passage = "Phi-3 runs on phones.\nPhi-3 runs on phones with 4 GB of memory."
    assert _first_quote("Does Phi-3 run on phones?", passage) == "Phi-3 runs on phones with 4 GB of memory."


def test_a_figure_beside_the_thing_asked_for_leads():
    # Both sentences hold a new figure and both name CUDA; only the second writes a version beside it. The path
    # comes first in its passage (rank) and holds more of the question's words, so without the cue it leads.
    passage = (
        "Check the CUDA install path C:\\Toolkit\\CUDA\\v12.4\\extras to find the Windows integration folder.\n"
        "Copy cuDNN 9.4 into CUDA 12.4."
    )
    question = "Which versions of CUDA and cuDNN does the Windows guide install?"
    assert _first_quote(question, passage) == "Copy cuDNN 9.4 into CUDA 12.4."
    # Only for a question that asks for a figure.
    assert _first_quote("Where does the Windows guide install CUDA?", passage).startswith("Check the CUDA")


def test_a_sentence_is_read_under_its_heading():
    # Two like sentences; only their headings say which platform each is about. Alone, the first passage's would
    # lead (its rank); read under its heading, the one about the platform the question names does.
    windows = _hit("Install the driver from the vendor's page.", 0, heading="Setup > Windows")
    linux = _hit("Install the driver with the package manager.", 1, heading="Setup > Linux")
    extract = extract_answer("How do I install the driver on Linux?", [windows, linux], SameForAll(), language="en")
    assert extract.quoted[0].text == "Install the driver with the package manager."
    extract = extract_answer("How do I install the driver?", [windows, linux], SameForAll(), language="en")
    assert extract.quoted[0].text == "Install the driver from the vendor's page."


def test_commands_and_assignments_are_code():
    for line in (
        'export llm_model_path = "your save location"',
        'optimum-cli export openvino --model "microsoft/Phi-3-mini-4k-instruct" --task text-generation-with-past',
        "python3 -m onnxruntime_genai.models.builder -m model_name -o out -p int4",
    ):
        assert looks_like_code(line), line
    for prose in ("Use the --model and --task options.", "Set up your environment first.", "It is well-known."):
        assert not looks_like_code(prose), prose


def test_a_lead_in_brings_the_prose_after_it_not_the_code():
    passage = (
        "You can log the model with a custom wrapper:\n"
        "python_model = Phi3Model(),\n"
        "The pipeline did not support the ONNX format at the time, so the wrapper is needed."
    )
    extract = extract_answer("How do I log the model with a wrapper?", [_hit(passage)], SameForAll(), language="en")
    quoted = [c.text for c in extract.quoted]
    assert quoted[0].endswith("wrapper:") and "python_model = Phi3Model()," not in quoted
