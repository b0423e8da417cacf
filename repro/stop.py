"""The one stop rule of training and evaluation: where a response ends.

A response ends at the first **end marker** of the evaluation protocol (SimpleRL-Zoo's
``qwen-boxed`` evaluation: the stop strings ``<|im_end|>``, ``<|endoftext|>``, ``</s>``). The
reference ids are SimpleRL-Zoo's: ``stop_token_ids=[151645, 151643]`` (``<|im_end|>``,
``<|endoftext|>`` in Qwen2.5's vocabulary), set by its evaluation for Qwen2 models and included in
its training rollout's Qwen2.5-7B ``stop_token_ids``
(``verl/workers/rollout/vllm_rollout/vllm_rollout.py``, hkust-nlp/simpleRL-reason). Every user of
the rule imports it from here:

* ``END_MARKERS``: the markers, in the evaluation's order (``repro.eval.prompts.STOP``).
* ``cut(text)``: the text the evaluation scores, up to the first end marker (the marker removed).
  The reward (``repro.reward``) grades ``cut(response)``.
* ``marker_token_ids(tokenizer)``: the markers that are one token of ``tokenizer`` (a base
  Qwen2.5: 151645 and 151643), which generation stops at in both trainers; ``string_markers``:
  the others (``</s>`` is several tokens in Qwen's vocabulary), stop strings where the engine has
  them (vLLM).
* ``response_length(ids, stop_ids)``: the response's length in tokens, up to and including the
  first stop token (every token when there is none) -- the length the action / completion mask
  counts, which f and λ's gradient are made of.
* ``stop_kind`` / ``stop_shares``: how a response ended (``marker``: an end marker that is not the
  model's EOS, e.g. ``<|im_end|>`` for a base model; ``eos``; ``length``: the token cap;
  ``other``: a stop string, or the context window), and the share of each kind in a rollout batch,
  logged per step by both trainers as ``stop_marker``, ``stop_eos``, ``stop_length``, ``stop_other``.

Pure Python (no torch, no package import), so every layer can import it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

END_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>")
# SimpleRL-Zoo's Qwen2.5 ids of the token markers (the reference; a tokenizer's own ids are read
# from it by ``marker_token_ids``)
QWEN25_MARKER_IDS = {"<|im_end|>": 151645, "<|endoftext|>": 151643}
STOP_KINDS = ("marker", "eos", "length", "other")
SHARE_KEYS = tuple(f"stop_{k}" for k in STOP_KINDS)


def cut(text: str, markers: Sequence[str] = END_MARKERS) -> str:
    """``text`` up to the earliest occurrence of any marker (the marker and all after it removed)."""
    if not isinstance(text, str):
        raise TypeError(f"a response must be a string, got {type(text).__name__}")
    end = len(text)
    for m in markers:
        if m:
            i = text.find(m)
            if i != -1:
                end = min(end, i)
    return text[:end]


def _single_token_id(tokenizer, marker: str) -> int | None:
    try:
        try:
            ids = tokenizer.encode(marker, add_special_tokens=False)
        except TypeError:  # a minimal tokenizer object without the keyword
            ids = tokenizer.encode(marker)
    except (KeyError, ValueError):  # a closed vocabulary that cannot spell the marker
        return None
    if len(ids) != 1:
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and ids[0] == unk and marker != getattr(tokenizer, "unk_token", None):
        return None
    return int(ids[0])


def marker_token_ids(tokenizer, markers: Sequence[str] = END_MARKERS) -> list[int]:
    """Ids of the markers that ``tokenizer`` encodes as one token, in marker order (no repeats).
    A tokenizer without any of them (the CPU task's character tokenizer) gives ``[]``."""
    out: list[int] = []
    for m in markers:
        i = _single_token_id(tokenizer, m)
        if i is not None and i not in out:
            out.append(i)
    return out


def string_markers(tokenizer, markers: Sequence[str] = END_MARKERS) -> list[str]:
    """The markers that are not one token of ``tokenizer`` (stop strings for an engine that has them)."""
    return [m for m in markers if _single_token_id(tokenizer, m) is None]


def eos_token_ids(tokenizer, generation_eos=None) -> list[int]:
    """The model's EOS ids: the tokenizer's ``eos_token_id`` plus a generation config's
    ``eos_token_id`` (an int, a list or None)."""
    out: list[int] = []
    extra = [] if generation_eos is None else ([generation_eos] if isinstance(generation_eos, int) else list(generation_eos))
    for i in [getattr(tokenizer, "eos_token_id", None), *extra]:
        if i is not None and int(i) not in out:
            out.append(int(i))
    return out


def response_length(token_ids: Sequence[int], stop_ids: Iterable[int]) -> int:
    """Tokens up to and including the first stop token; all of them when there is none."""
    stop = set(int(i) for i in stop_ids)
    for k, t in enumerate(token_ids):
        if int(t) in stop:
            return k + 1
    return len(token_ids)


def stop_kind(token_ids: Sequence[int], *, marker_ids: Iterable[int], eos_ids: Iterable[int],
              truncated: bool) -> str:
    """How a response (already cut by ``response_length``) ended: ``eos`` (its last token is the
    model's EOS), ``marker`` (another end marker), ``length`` (the engine's token cap), else
    ``other``."""
    last = int(token_ids[-1]) if len(token_ids) else None
    if last is not None and last in set(int(i) for i in eos_ids):
        return "eos"
    if last is not None and last in set(int(i) for i in marker_ids):
        return "marker"
    return "length" if truncated else "other"


def stop_shares(kinds: Sequence[str]) -> dict:
    """``{"stop_marker": share, "stop_eos": ..., "stop_length": ..., "stop_other": ...}``."""
    bad = sorted(set(kinds) - set(STOP_KINDS))
    if bad:
        raise ValueError(f"unknown stop kind(s) {bad}; known: {STOP_KINDS}")
    n = len(kinds)
    if n == 0:
        raise ValueError("no responses: the stop shares of an empty batch are undefined")
    return {f"stop_{k}": sum(x == k for x in kinds) / n for k in STOP_KINDS}
