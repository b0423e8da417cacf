"""The synthetic verifiable task of the CPU-scale reproduction, and its character tokenizer.

Problem: the sum of k integers in 0..99 (k in 2..5), posed as ``Q97+53+5+33+65=``.

Three answer styles, mixed in the supervised data, so that response length is a real choice:

* ``direct``  (shortest): ``\\boxed{253}``
* ``terse``   (medium):   running sums only: ``150,155,188,253;\\boxed{253}``.  The model must find
  the next operand in the prompt by itself, which a 2-layer model does less reliably.
* ``verbose`` (longest):  each step restates its operands:
  ``97+53=150,150+5=155,155+33=188,188+65=253;\\boxed{253}``.  Copying the operands next to
  each other makes every addition local, so this style is the most accurate.

Two task variants use the same prompts and the same starting checkpoint:

* ``sum``: a generous budget (64 new tokens).  Longer styles are more accurate, so within a
  group long responses tend to have positive advantage: λ should go up.
* ``budget``: a tight budget (``BUDGET_TOKENS`` new tokens), enough for every terse answer and
  for a 2-term verbose answer, but not for verbose answers with k >= 3, which are cut before
  their ``\\boxed{}`` and get the no-box reward -1.  Verbosity hurts: λ should go down.

Held-out split: a problem belongs to the test split when the SHA-1 of its prompt is 0 mod 10.
Training (supervised and RL) only ever sees train-split problems; evaluation only test-split.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

BOXED = "\\boxed{"
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list("0123456789") + list("+=,;Q}")
VOCAB = SPECIALS + CHARS + [BOXED]

K_MIN, K_MAX = 2, 5
V_MAX = 99
STYLES = ("direct", "terse", "verbose")
SUM_TOKENS = 64
BUDGET_TOKENS = 24


@dataclass(frozen=True)
class TaskVariant:
    name: str
    max_new_tokens: int
    description: str


VARIANTS = {
    "sum": TaskVariant("sum", SUM_TOKENS, "sums of 2-5 numbers, 64-token budget: verbosity helps"),
    "budget": TaskVariant("budget", BUDGET_TOKENS,
                          "same sums, 24-token budget: verbose chains for k>=3 are cut, verbosity hurts"),
}


def get_variant(name: str) -> TaskVariant:
    if name not in VARIANTS:
        raise ValueError(f"unknown task variant {name!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[name]


# ----------------------------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    xs: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "Q" + "+".join(map(str, self.xs)) + "="

    @property
    def answer(self) -> str:
        return str(sum(self.xs))

    @property
    def k(self) -> int:
        return len(self.xs)


def is_test(problem: Problem) -> bool:
    """The held-out split: SHA-1 of the prompt is 0 mod 10 (about 10% of problems)."""
    return int(hashlib.sha1(problem.prompt.encode()).hexdigest(), 16) % 10 == 0


def sample_problems(n: int, rng: random.Random, split: str = "train") -> list[Problem]:
    """n problems of the given split (``train`` or ``test``), k uniform in 2..5, values 0..99."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    want_test = split == "test"
    out = []
    while len(out) < n:
        k = rng.randint(K_MIN, K_MAX)
        p = Problem(tuple(rng.randint(0, V_MAX) for _ in range(k)))
        if is_test(p) == want_test:
            out.append(p)
    return out


def solution(problem: Problem, style: str) -> str:
    """The reference response of one style (without the end-of-sequence token)."""
    xs = problem.xs
    box = BOXED + problem.answer + "}"
    if style == "direct":
        return box
    run, steps = xs[0], []
    for x in xs[1:]:
        new = run + x
        steps.append(f"{run}+{x}={new}" if style == "verbose" else str(new))
        run = new
    if style not in ("terse", "verbose"):
        raise ValueError(f"unknown style {style!r}; known: {STYLES}")
    return ",".join(steps) + ";" + box


def classify_style(response: str) -> str:
    """Which style a response looks like: direct / terse / verbose / other."""
    body = response.split(";")[0] if ";" in response else response
    if response.startswith(BOXED):
        return "direct"
    if ";" not in response:
        return "other"
    return "verbose" if "+" in body else "terse"


# ----------------------------------------------------------------------------------------------
# the tokenizer: one token per character, ``\\boxed{`` one token
# ----------------------------------------------------------------------------------------------
def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over ``VOCAB`` built with the ``tokenizers`` library."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


def encode_prompt(tok, problem: Problem) -> list[int]:
    return [tok.bos_token_id] + tok.encode(problem.prompt, add_special_tokens=False)


def encode_response(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
