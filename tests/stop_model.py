"""A tiny Qwen2 with a Qwen2.5-style tokenizer that answers, writes ``<|im_end|>`` and goes on.

The tokenizer is transformers' own ``Qwen2Tokenizer`` (byte-level BPE, Qwen2's pre-tokenizer
regex, what ``AutoTokenizer`` and vLLM load for a ``qwen2`` model) over a small vocabulary: the
256 byte symbols, a few merged words, and Qwen2.5's special tokens ``<|endoftext|>`` (EOS and
pad, as in a base Qwen2.5), ``<|im_start|>``, ``<|im_end|>``.

The model is a 1-layer ``Qwen2ForCausalLM`` whose weights are set by hand so the next token is a
fixed function of the current one (a bigram table): one-hot embeddings, attention and MLP outputs
zeroed (``o_proj``, ``down_proj`` = 0: the layer adds nothing to the residual stream), and an
``lm_head`` whose row of the successor is large (a logit margin of about 200, so sampling at
temperature 1 gives the successor with probability 1 - e^-200). After the prompt's last token
(``\\n`` after ``<|im_start|>assistant``) it writes, for any question, 12 tokens::

    So \\boxed { 7 } <|im_end|> <|im_start|> user \\fbox ' ' 2 <|endoftext|>

a right answer (gold ``7``), the end of its turn, then a made-up next turn whose last box holds a
wrong answer, and the base model's EOS. The evaluation scores ``So\\boxed{7}`` (+1); grading the
whole text would see ``\\fbox 2`` (-0.5).
"""
from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WORDS = ["So", "\\boxed", "\\fbox", "user", "assistant", "system"]
# the pieces Qwen2's pre-tokenizer cuts the text into, in order (each appears once: a bigram chain)
CHAIN = ["\n", "So", "\\boxed", "{", "7", "}", "<|im_end|>", "<|im_start|>", "user", "\\fbox", " ", "2",
         "<|endoftext|>"]
GOLD = "7"
RESPONSE_TEXT = "So\\boxed{7}<|im_end|><|im_start|>user\\fbox 2<|endoftext|>"
RESPONSE_LEN = len(CHAIN) - 1                   # 12 tokens, up to and including <|endoftext|>
SCORED_LEN = CHAIN.index("<|im_end|>")          # 6 tokens, up to and including <|im_end|>
SCORED_TEXT = "So\\boxed{7}"
HIDDEN = 384


def _byte_symbols() -> dict[int, str]:
    """GPT-2's byte -> printable-character table (the alphabet of a byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def vocab_and_merges():
    sym = _byte_symbols()
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for b in range(256):
        vocab.setdefault(sym[b], len(vocab))
    merges = []
    for w in WORDS:  # left to right: ("S","o"), ("\\b","o") ... so each word is one token
        enc = "".join(sym[b] for b in w.encode())
        cur = enc[0]
        for ch in enc[1:]:
            merges.append((cur, ch))
            cur += ch
            vocab.setdefault(cur, len(vocab))
    return vocab, merges


def build(folder: str | Path) -> Path:
    """Write the tokenizer and the model to ``folder`` (float32 safetensors); returns it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), eos_token="<|endoftext|>",
                         pad_token="<|endoftext|>", unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.save_pretrained(folder)
    V = len(tok)
    ids = [tok.convert_tokens_to_ids(t) for t in chain_tokens(tok)]
    assert len(set(ids)) == len(ids) and V <= HIDDEN, (ids, V)

    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(vocab_size=V, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                      rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).float()
    with torch.no_grad():
        emb = torch.zeros(V, HIDDEN)
        emb[torch.arange(V), torch.arange(V)] = 1.0
        model.model.embed_tokens.weight.copy_(emb)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        head = torch.zeros(V, HIDDEN)
        for a, b in zip(ids[:-1], ids[1:]):
            head[b, a] = 10.0  # the RMS norm scales a one-hot to sqrt(384) ~ 19.6
        model.lm_head.weight.copy_(head)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    model.generation_config.bos_token_id = eos
    model.save_pretrained(folder)
    return folder


def chain_tokens(tok) -> list[str]:
    """The chain as the tokenizer's token strings (byte-level symbols: ``\\n`` is ``Ċ``)."""
    out = []
    for piece in CHAIN:
        if piece in SPECIAL:
            out.append(piece)
        else:
            t = tok.tokenize(piece)
            assert len(t) == 1, (piece, t)
            out.append(t[0])
    return out


def chain_ids(tok) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in chain_tokens(tok)]
