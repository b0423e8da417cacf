"""Model, sampling and held-out evaluation helpers shared by the pretraining script and the
reference RL trainer (CPU scale, the package's own tiny Qwen2 model and synthetic task).

* ``build_model``: a from-scratch ``Qwen2ForCausalLM`` from a ``Qwen2Config``.
* ``load_policy``: model + tokenizer from a checkpoint folder (clear error if it is missing).
* ``generate``: Hugging Face ``generate`` (KV cache) on left-padded prompts, returning the
  response tokens, their mask, lengths, truncation flags and decoded texts.
* ``evaluate``: greedy decoding on held-out problems, graded with the paper's reward rule.

Evaluation note: the package's general evaluation pipeline (``repro.eval``) targets the
paper's benchmarks; for this task a 30-line greedy loop is all that is needed, so it lives here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from repro.reward import CORRECT, reward
from repro.tasks.arith import VOCAB, Problem, build_tokenizer, classify_style, encode_prompt

MODEL_CONFIG = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-sum"


def build_model(tok, **overrides):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(VOCAB), bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      **{**MODEL_CONFIG, **overrides})
    return Qwen2ForCausalLM(cfg)


def save_policy(model, tok, path: str | Path) -> None:
    """Weights (safetensors), config.json and the tokenizer. A tied embedding is stored once,
    under ``model.embed_tokens.weight`` (as ``save_pretrained`` does): vLLM 0.29 reads a
    checkpoint that holds only ``lm_head.weight`` as untied and leaves the embedding
    uninitialised. Written directly rather than with ``save_pretrained``, which imports every
    installed integration (seconds per checkpoint on this machine)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(path / "config.json")
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the same tensor as model.embed_tokens.weight
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    tok.save_pretrained(path)


def load_policy(path: str | Path):
    """(model, tokenizer) from a checkpoint folder written by ``save_pretrained``."""
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model checkpoint at {path} (expected config.json + model.safetensors); "
            f"build one with `python -m repro.trainers.pretrain --out {path}`")
    model = Qwen2ForCausalLM.from_pretrained(path)
    if (path / "tokenizer.json").is_file():
        tok = PreTrainedTokenizerFast.from_pretrained(path)
        tok.padding_side = "left"
    else:
        tok = build_tokenizer()
    return model, tok


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, T] (pad after eos)
    response_mask: torch.Tensor  # [B, T] 1 on generated tokens up to and including eos
    lengths: torch.Tensor  # [B] number of response tokens (incl. eos)
    truncated: torch.Tensor  # [B] bool: no eos within the budget
    texts: list[str]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), P), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):] = torch.tensor(s)
        mask[i, P - len(s):] = 1
    return ids, mask


@torch.no_grad()
def generate(model, tok, problems: list[Problem], *, n: int = 1, max_new_tokens: int = 64,
             temperature: float = 1.0, greedy: bool = False) -> Rollout:
    """n responses per problem (rows grouped: problem 0's n responses first)."""
    was_training = model.training
    model.eval()
    ids, mask = left_pad([encode_prompt(tok, p) for p in problems], tok.pad_token_id)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature,
                                                    top_k=0, top_p=1.0)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)
    model.train(was_training)
    resp = out[:, ids.shape[1]:]
    is_eos = resp == tok.eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, resp.shape[1], dtype=torch.long))
    lengths = torch.where(has_eos, first_eos + 1, torch.full_like(first_eos, resp.shape[1]))
    pos = torch.arange(resp.shape[1])[None, :]
    rmask = (pos < lengths[:, None]).long()
    resp = torch.where(rmask.bool(), resp, torch.full_like(resp, tok.pad_token_id))
    texts = [tok.decode(r[: int(L) - int(h)].tolist(), skip_special_tokens=True)
             for r, L, h in zip(resp, lengths, has_eos)]
    return Rollout(ids, mask, resp, rmask, lengths, ~has_eos, texts)


@torch.no_grad()
def evaluate(model, tok, problems: list[Problem], *, max_new_tokens: int, batch_size: int = 250) -> dict:
    """Greedy accuracy on ``problems`` with the paper's reward rule; plus length and style mix."""
    if not problems:
        raise ValueError("evaluate() needs at least one problem")
    rewards, lengths, trunc, styles = [], [], [], []
    by_k: dict[int, list[float]] = {}
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        ro = generate(model, tok, chunk, n=1, max_new_tokens=max_new_tokens, greedy=True)
        for p, text, L, t in zip(chunk, ro.texts, ro.lengths.tolist(), ro.truncated.tolist()):
            r = reward(text, p.answer)
            rewards.append(r)
            lengths.append(L)
            trunc.append(t)
            styles.append(classify_style(text))
            by_k.setdefault(p.k, []).append(float(r == CORRECT))
    n = len(rewards)
    return {
        "n": n,
        "accuracy": sum(r == CORRECT for r in rewards) / n,
        "reward_mean": sum(rewards) / n,
        "response_length_mean": sum(lengths) / n,
        "truncated_rate": sum(trunc) / n,
        "style_share": {s: styles.count(s) / n for s in ("direct", "terse", "verbose", "other")},
        "accuracy_by_k": {k: sum(v) / len(v) for k, v in sorted(by_k.items())},
    }
