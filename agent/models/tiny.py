"""A tiny, randomly initialised Phi-3 with its own tokenizer, built locally in a second or two.

Tests and offline demos load it through exactly the code path a real Phi-3 takes (`load_phi3` on a folder), so
the loading, chat-template, generation, streaming and adapter code is exercised without any model hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PHI3_SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
"""Phi-3's chat markers; `<|endoftext|>` (id 0) doubles as pad and eos, as in Phi-3."""

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
"""The template of microsoft/Phi-3-mini-4k-instruct."""

LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
"""Phi-3's fused projection names: an adapter trained for the real model targets these."""

TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "original_max_position_embeddings": 512,
}
"""The tiny Phi-3's layer sizes (its vocabulary comes from the tokenizer trained here); `bench train` uses them."""


_CORPUS = """\
The quick brown fox jumps over the lazy dog. How do I reset my password? Open the settings page and choose
"Security", then follow the link in the email we send you. Our office is open Monday to Friday, 9am to 5pm.
Expense reports are due on the last working day of each month. The VPN client must be updated before Friday.
Ask the help desk about laptops, badges, parking and travel. Deployments run every Tuesday at 10:00 UTC.
Der schnelle braune Fuchs springt über den faulen Hund. Wie setze ich mein Passwort zurück? Straße, Größe.
Le renard brun rapide saute par-dessus le chien paresseux. Où est la salle de réunion ? Ça coûte 12,50 €.
El rápido zorro marrón salta sobre el perro perezoso. ¿Cuándo abre la oficina? Mañana a las nueve.
Быстрая коричневая лиса прыгает через ленивую собаку. Как сбросить пароль? Спасибо за помощь.
Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Καλημέρα, πώς μπορώ να βοηθήσω;
الثعلب البني السريع يقفز فوق الكلب الكسول. كيف يمكنني إعادة تعيين كلمة المرور؟
השועל החום המהיר קופץ מעל הכלב העצלן. איך מאפסים את הסיסמה?
तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। मैं अपना पासवर्ड कैसे रीसेट करूँ?
敏捷的棕色狐狸跳过了懒狗。我怎样重置密码？办公室周一至周五开放。
素早い茶色の狐がのろまな犬を飛び越える。パスワードをリセットするにはどうすればいいですか？
빠른 갈색 여우가 게으른 개를 뛰어넘는다. 비밀번호를 어떻게 재설정하나요?
สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ ฉันจะรีเซ็ตรหัสผ่านได้อย่างไร
def main(): print("hello, world")  # code, numbers 0123456789 and symbols !@#$%^&*()[]{}<>/\\|~`
"""


def _train_tokenizer(vocab_size: int) -> object:
    """Byte-level BPE: every byte is in the alphabet, so text in any script tokenizes without unknowns."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=PHI3_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


def build_tiny_phi3(folder: Path, *, seed: int = 0, vocab_size: int = 2000) -> Path:
    """Write a random-weight Phi-3 (config, safetensors, generation config) and its tokenizer into `folder`."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token="<s>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        model_max_length=512,
    )
    tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    config = Phi3Config(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_adapter(base_folder: Path, out_dir: Path, *, seed: int = 1) -> Path:
    """Write a LoRA adapter for the tiny model whose B matrices are non-zero, so it visibly changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False, task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return out_dir
