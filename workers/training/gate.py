"""The evaluation gate: a candidate adapter is promoted only when it beats what is served and forgets nothing.

Both models (the candidate and the current adapter, or the bare base model when none is served) are scored in
one process on one loaded base model, on the same questions:

- **definition choice**: for each probe, the mean log-likelihood per token of the right answer against the
  distractors (other answers of the same kind); accuracy is how often the right one wins. Probes are the
  held-out curated items and every trained term asked with a phrasing never trained on.
- **answer containment** (reported): the share of the right answer's words found in a greedy answer.
- **domain perplexity** on held-out tenant-wide passages, and **general perplexity** on everyday text.

The rule: promote when accuracy rises by `min_gain`, or when it does not fall and domain perplexity falls by
`min_domain_gain`; never when general perplexity rises by more than `max_forgetting`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

import torch

from workers.training.data import Dataset, Probe
from workers.training.general_text import GENERAL_TEXT


@dataclass(frozen=True)
class GateConfig:
    min_gain: float = 0.05
    min_domain_gain: float = 0.05
    max_forgetting: float = 0.10
    containment_probes: int = 16

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GateConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown gate setting(s) {', '.join(unknown)}")
        return cls(**raw)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _answer_logprob(model: Any, tokenizer: Any, prompt: str, answers: list[str]) -> list[float]:
    """Mean log-probability per token of each answer after the chat-formatted prompt, in one batch."""
    turn = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    rows = [head_ids + tokenizer(a + "<|end|>", add_special_tokens=False)["input_ids"] for a in answers]
    width = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    scores = []
    for i, r in enumerate(rows):
        span = logp[i, len(head_ids) - 1 : len(r) - 1]
        scores.append(float(span.mean()))
    return scores


def _perplexity(model: Any, tokenizer: Any, texts: list[str], max_len: int = 512) -> float:
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_len]
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = model(input_ids=ids.to(model.device), labels=ids.to(model.device)).loss
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(total / count) if count else float("nan")


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) > 3}


def _containment(model: Any, tokenizer: Any, probes: list[Probe], max_new_tokens: int = 48) -> float:
    """Mean share of each right answer's words (longer than 3 letters) that a greedy answer contains."""
    shares = []
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for probe in probes:
        turn = [{"role": "user", "content": probe.prompt}]
        prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=[tokenizer.eos_token_id, end],
                pad_token_id=tokenizer.pad_token_id,
            )
        said = _words(tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        want = _words(probe.answer)
        if want:
            shares.append(len(want & said) / len(want))
    return sum(shares) / len(shares) if shares else 0.0


def score(model: Any, tokenizer: Any, dataset: Dataset, config: GateConfig) -> dict[str, float]:
    """Every gate metric of one model (the adapter active in `model`)."""
    model.eval()
    wins: dict[bool, list[float]] = {True: [], False: []}
    margins = []
    for probe in dataset.probes:
        right, *others = _answer_logprob(model, tokenizer, probe.prompt, [probe.answer, *probe.distractors])
        wins[probe.heldout].append(1.0 if right > max(others) else 0.0)
        margins.append(right - max(others))
    all_wins = wins[True] + wins[False]
    metrics = {
        "choice_accuracy": round(sum(all_wins) / len(all_wins), 4) if all_wins else float("nan"),
        "choice_accuracy_heldout_items": round(sum(wins[True]) / len(wins[True]), 4) if wins[True] else float("nan"),
        "choice_margin": round(sum(margins) / len(margins), 4) if margins else float("nan"),
        "containment": round(_containment(model, tokenizer, dataset.probes[: config.containment_probes]), 4),
        "domain_ppl": round(_perplexity(model, tokenizer, dataset.heldout_text), 3),
        "general_ppl": round(_perplexity(model, tokenizer, GENERAL_TEXT), 3),
    }
    return metrics


def decide(candidate: dict[str, float], reference: dict[str, float], config: GateConfig, against: str) -> Decision:
    """Promote or not, with a reason a person can read (`against`: "v0003" or "the base model")."""
    c_gen, r_gen = candidate["general_ppl"], reference["general_ppl"]
    if c_gen > r_gen * (1 + config.max_forgetting):
        rise = c_gen / r_gen - 1
        return Decision(
            False,
            f"forgets general language: perplexity on general text {r_gen:.2f} -> {c_gen:.2f} "
            f"(+{rise:.0%}, at most +{config.max_forgetting:.0%} allowed)",
        )
    c_acc, r_acc = candidate["choice_accuracy"], reference["choice_accuracy"]
    c_dom, r_dom = candidate["domain_ppl"], reference["domain_ppl"]
    has_probes, has_text = not math.isnan(c_acc), not math.isnan(c_dom)
    if not has_probes and not has_text:
        return Decision(False, "nothing to evaluate on: no curated items with distractors and no held-out passages")
    knowledge = f"definition choice {r_acc:.2f} ({against}) -> {c_acc:.2f}" if has_probes else ""
    domain = f"domain perplexity {r_dom:.2f} -> {c_dom:.2f}" if has_text else ""
    facts = "; ".join(p for p in (knowledge, domain) if p)
    if has_probes and c_acc - r_acc >= config.min_gain - 1e-9:
        return Decision(True, f"knows the domain better: {facts}")
    domain_gain = 1 - c_dom / r_dom if has_text else 0.0
    if (not has_probes or c_acc >= r_acc) and has_text and domain_gain >= config.min_domain_gain:
        return Decision(True, f"models the domain's text better: {facts}")
    return Decision(
        False,
        f"does not beat {against} by the margin (choice accuracy +{config.min_gain:.2f} or domain perplexity "
        f"-{config.min_domain_gain:.0%}): {facts}",
    )


def evaluate(
    base_model: str, candidate: Any, current: Any | None, dataset: Dataset, config: GateConfig
) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate metrics, reference metrics); `candidate`/`current` are adapter folders (current may be None)."""
    from peft import PeftModel

    from agent.models.phi3 import load_phi3

    model, tokenizer = load_phi3(base_model, adapter=None, want_4bit=True)
    peft_model = PeftModel.from_pretrained(model, str(candidate), adapter_name="candidate", is_trainable=False)
    cand = score(peft_model, tokenizer, dataset, config)
    if current is None:
        with peft_model.disable_adapter():
            ref = score(peft_model, tokenizer, dataset, config)
    else:
        peft_model.load_adapter(str(current), adapter_name="current", is_trainable=False)
        peft_model.set_adapter("current")
        ref = score(peft_model, tokenizer, dataset, config)
    return cand, ref
