"""A model directory the mocker and the frontend accept, made offline (no hub download).

The mocker needs `config.json`, `tokenizer.json` and `tokenizer_config.json` with a chat
template. The tokenizer is a byte-level BPE trained here with `tokenizers` on made-up text,
with a vocabulary of at least 2,000 tokens: the mocker emits token ids 1000-1999 whatever
the config says, and with a smaller vocabulary responses come back with `content: null`.
Runs inside Dynamo's venv (which has `tokenizers`): `python -m devtools.dynamo.model_dir DIR`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

VOCAB_SIZE = 4096
MODEL_NAME = "bench-llama"
_MARKER = "model.done"
_TEXT = (
    "the agent plans a search and summarises what it found for the user who asked about "
    "prices weather travel code review tests latency tokens router queue priority batch "
    "tag label classify reply draft polish answer question report writer planner tool call "
    "result context memory policy service class fleet run makespan schedule arrival load"
)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _corpus(lines: int = 20_000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = rng.choices(_TEXT.split(), k=rng.randint(5, 30))
        out.append(" ".join(words) + f" {rng.randint(0, 10**6)}.")
    return out


def write_model_dir(path: Path) -> Path:
    """Make the directory (once; needs `tokenizers`, so run it in Dynamo's venv)."""
    if (path / _MARKER).is_file():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    vocab = tokenizer.get_vocab_size()
    if vocab < 2000:
        raise RuntimeError(f"vocabulary {vocab} < 2000: the mocker's token ids would not decode")
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "model_max_length": 32768,
                "chat_template": CHAT_TEMPLATE,
            },
            indent=1,
        )
    )
    (path / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "vocab_size": vocab,
                "hidden_size": 256,
                "intermediate_size": 688,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "torch_dtype": "bfloat16",
            },
            indent=1,
        )
    )
    (path / _MARKER).write_text(f"{vocab}\n")
    return path


def ensure_model_dir(python: Path, path: Path) -> Path:
    """The model directory, made with Dynamo's venv `python` when missing."""
    if not (path / _MARKER).is_file():
        subprocess.run(
            [str(python), "-m", "devtools.dynamo.model_dir", str(path)],
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    return path


if __name__ == "__main__":
    write_model_dir(Path(sys.argv[1]))
