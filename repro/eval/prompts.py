"""Prompts and stop strings of the paper's evaluation (SimpleRL-Zoo's ``qwen-boxed``, zero-shot)."""
from __future__ import annotations

from repro.stop import END_MARKERS

QWEN_BOXED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{question}\nPlease reason step by step, and put your final answer "
    "within \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\n"
)

# The stop strings: the end markers of the one stop rule (``repro.stop``), which training uses too.
# The original evaluation also stopped qwen prompt types at
# "assistant", "user", "_end" and "_start" (QWEN_EXTRA_STOP), which cuts any response that
# uses those words; ``stop_strings(extra=True)`` adds them for a faithful re-run.
STOP = END_MARKERS
QWEN_EXTRA_STOP = ("assistant", "user", "_end", "_start")

# The CPU task (repro/tasks/arith.py): its tokenizer's <bos>, then the bare prompt, as the reference
# trainer encodes it (arith.encode_prompt).
ARITH = "<bos>{question}"

TEMPLATES = {"qwen-boxed": QWEN_BOXED, "arith": ARITH}


def build_prompt(question: str, template: str = "qwen-boxed") -> str:
    """The prompt for one question; the original strips surrounding spaces (not newlines)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template].format(question=question).strip(" ")


def stop_strings(extra: bool = False) -> list[str]:
    return list(STOP) + (list(QWEN_EXTRA_STOP) if extra else [])
