"""Generation backends behind one interface.

    backend.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=..., stop=None)
        -> list[list[str]]      # n completions per prompt, in order, stop strings cut off

* ``VLLMBackend``: vLLM on GPUs (the default when ``vllm`` imports and CUDA is present), or vLLM's
  CPU build (chosen with ``backend="vllm"``); each sampled prompt carries its own seed.
* ``HFBackend``: Hugging Face transformers on CPU (or any torch device): left-padded batches,
  ``model.generate`` with its KV cache, stop strings checked on the decoded tail of every
  sequence. It takes a model path, or a model object plus any tokenizer with ``encode``/``decode``
  (the CPU-scale trainer passes its own tiny model and character tokenizer).
* ``CachedGenerator``: wraps a backend with an on-disk cache (JSONL, one line per finished
  prompt, fsynced), so an interrupted evaluation resumes where it stopped.

Nothing here knows about the qwen template: prompts arrive as finished strings.
``temperature == 0`` means greedy (top-p is then ignored, as in the original evaluation).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Protocol, Sequence

from repro.stop import marker_token_ids


class Backend(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, max_tokens: int = 1024,
                 stop: Sequence[str] | None = None) -> list[list[str]]: ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to the earliest occurrence of any stop string (the stop string removed)."""
    cut = len(text)
    for s in stop or ():
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _check_args(n: int, temperature: float, top_p: float, max_tokens: int) -> None:
    if n < 1 or max_tokens < 1 or temperature < 0 or not (0 < top_p <= 1):
        raise ValueError(f"bad sampling settings: n={n} temperature={temperature} "
                         f"top_p={top_p} max_tokens={max_tokens}")


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------
class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer=None, *, batch_size: int = 8, device: str = "cpu",
                 dtype=None, seed: int = 0, progress: bool = False):
        import torch

        if isinstance(model, (str, Path)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
            model = model.to(device)
        if tokenizer is None:
            raise ValueError("HFBackend needs a tokenizer when given a model object")
        # A model object passed in (a trainer's policy) is neither moved nor left in eval mode.
        self.model = model
        self.tok = tokenizer
        self.device = device
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        self._calls = 0
        cfg_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        eos_ids = [eos] if eos is not None else []
        if cfg_eos is not None:
            eos_ids += list(cfg_eos) if isinstance(cfg_eos, (list, tuple)) else [cfg_eos]
        self.eos_ids = sorted({int(e) for e in eos_ids})
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0))
        # the one stop rule (repro.stop): the end markers that are one token stop generation too
        # (decoding skips special tokens, so a stop string "<|im_end|>" would never be seen)
        self.eos_ids = sorted(set(self.eos_ids) | set(marker_token_ids(tokenizer)))

    # tokenizer adapters: HF tokenizers and minimal encode/decode objects alike
    def _encode(self, text: str) -> list[int]:
        try:
            return list(self.tok.encode(text, add_special_tokens=False))
        except TypeError:
            return list(self.tok.encode(text))

    def _decode(self, ids: list[int]) -> str:
        try:
            return self.tok.decode(ids, skip_special_tokens=True)
        except TypeError:
            return self.tok.decode(ids)

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=1024, stop=None):
        import torch

        _check_args(n, temperature, top_p, max_tokens)
        stop = [s for s in (stop or []) if s]
        greedy = temperature == 0
        copies = 1 if greedy else n  # greedy samples are identical: generate once
        jobs = [(i, j) for i in range(len(prompts)) for j in range(copies)]
        encoded = [self._encode(p) for p in prompts]
        jobs.sort(key=lambda ij: -len(encoded[ij[0]]))  # similar lengths share a batch
        out: list[list[str | None]] = [[None] * copies for _ in prompts]
        batches = [jobs[k:k + self.batch_size] for k in range(0, len(jobs), self.batch_size)]
        it = batches
        if self.progress:
            from tqdm import tqdm

            it = tqdm(batches, desc="generate (hf)", unit="batch")
        for batch in it:
            seqs = [encoded[i] for i, _ in batch]
            texts = self._generate_batch(seqs, greedy, temperature, top_p, max_tokens, stop)
            for (i, j), t in zip(batch, texts):
                out[i][j] = t
        return [row * n if greedy else row for row in out]  # type: ignore[misc]

    def _generate_batch(self, seqs, greedy, temperature, top_p, max_tokens, stop):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        P = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), P), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), P), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, P - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[r, P - len(s):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        decode = self._decode
        tail = max((len(s) for s in stop), default=0) + 8

        class StopOnStrings(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                if not stop:
                    return done
                gen = input_ids[:, P:]
                for r in range(gen.shape[0]):
                    text = decode(gen[r, -tail:].tolist())
                    done[r] = any(s in text for s in stop)
                return done

        from transformers import GenerationConfig

        # A fresh config: the checkpoint's generation_config.json (repetition penalty, top-k, ...)
        # must not change the pinned protocol.
        kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=float(temperature),
                                                       top_p=float(top_p), top_k=0)
        gc = GenerationConfig(max_new_tokens=int(max_tokens), eos_token_id=self.eos_ids or None,
                              pad_token_id=self.pad_id, **kw)
        torch.manual_seed(self.seed + self._calls)
        self._calls += 1
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                res = self.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=gc,
                    stopping_criteria=StoppingCriteriaList([StopOnStrings()]))
        finally:
            self.model.train(was_training)
        texts = []
        for r in range(len(seqs)):
            toks = res[r, P:].tolist()
            for k, t in enumerate(toks):  # cut at the first eos (the rest is padding)
                if t in self.eos_ids:
                    toks = toks[:k]
                    break
            texts.append(cut_at_stop(decode(toks), stop))
        return texts


# ---------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------
def request_seed(seed: int, prompt: str) -> int:
    """The sampling seed of one prompt: fixed by (seed, prompt text) alone, so a prompt's n samples
    are the same whatever else is in the call, in a fresh engine or a used one (a resumed
    evaluation, another chunking, a second call), as the ``CachedGenerator`` resume needs."""
    import hashlib

    h = hashlib.sha256(f"{int(seed)}\x00{prompt}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


class VLLMBackend:
    """vLLM's ``LLM``: on GPUs, or on a CPU through vLLM's CPU build (``make engines``), where it
    runs eagerly (no CUDA graphs; ``enforce_eager`` defaults to "no CUDA here") and the KV cache is
    ``gpu_memory_utilization`` x RAM (keep it small: 0.05 is about 1 GiB on 24 GiB).

    Greedy requests ignore the seed; sampled ones carry ``request_seed(seed, prompt)`` each."""
    name = "vllm"

    def __init__(self, model: str, *, seed: int = 0, dtype: str = "auto",
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, enforce_eager: bool | None = None):
        import torch
        from vllm import LLM

        if enforce_eager is None:
            enforce_eager = not torch.cuda.is_available()
        self.seed = int(seed)
        kw = dict(model=str(model), seed=seed, dtype=dtype,
                  tensor_parallel_size=tensor_parallel_size,
                  gpu_memory_utilization=gpu_memory_utilization, enforce_eager=bool(enforce_eager))
        if max_model_len:
            kw["max_model_len"] = max_model_len
        try:
            # vLLM's own sampling defaults, not the checkpoint's generation_config.json
            self.llm = LLM(generation_config="vllm", **kw)
        except TypeError:  # a vLLM without that option never read the checkpoint's defaults
            self.llm = LLM(**kw)

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=1024, stop=None):
        from vllm import SamplingParams

        _check_args(n, temperature, top_p, max_tokens)
        greedy = temperature == 0
        # stop_token_ids: the end markers that are one token (repro.stop, SimpleRL-Zoo's
        # [151645, 151643] for Qwen2.5); vLLM checks stop strings on text decoded without special
        # tokens, so the string "<|im_end|>" alone never stops it
        stop_ids = marker_token_ids(self.llm.get_tokenizer())
        params = [SamplingParams(n=1 if greedy else n, temperature=float(temperature),
                                 top_p=1.0 if greedy else float(top_p), max_tokens=int(max_tokens),
                                 stop=list(stop or []), stop_token_ids=stop_ids,
                                 seed=None if greedy else request_seed(self.seed, p))
                  for p in prompts]
        results = self.llm.generate(list(prompts), params, use_tqdm=False)
        out = []
        for r in results:
            texts = [cut_at_stop(o.text, stop) for o in r.outputs]
            out.append(texts * n if greedy else texts)
        return out


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def make_backend(model: str, backend: str = "auto", **kw) -> Backend:
    """``auto``: vLLM when it imports and a GPU is present, else Hugging Face transformers."""
    if backend == "auto":
        backend = "vllm" if vllm_available() else "hf"
    if backend == "vllm":
        keep = {k: kw[k] for k in ("seed", "dtype", "tensor_parallel_size",
                                   "gpu_memory_utilization", "max_model_len", "enforce_eager") if k in kw}
        return VLLMBackend(model, **keep)
    if backend == "hf":
        keep = {k: kw[k] for k in ("batch_size", "device", "seed", "progress") if k in kw}
        return HFBackend(model, **keep)
    raise ValueError(f"unknown backend {backend!r}; known: auto, vllm, hf")


# ---------------------------------------------------------------------------------------------
# the on-disk generation cache
# ---------------------------------------------------------------------------------------------
class SettingsMismatch(RuntimeError):
    pass


class CachedGenerator:
    """Generations of one benchmark under fixed settings, cached in ``path`` (JSONL).

    ``path.with_suffix('.settings.json')`` holds the settings; reusing a cache with different
    settings (another model, n, temperature, ...) is refused rather than silently mixed.
    A torn last line (a crash in the middle of a write) is ignored and regenerated.
    """

    def __init__(self, path: str | Path, settings: dict):
        from repro.runs import write_json_atomic

        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        meta = self.path.with_suffix(".settings.json")
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != self.settings:
                diff = {k: (old.get(k), self.settings.get(k))
                        for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k)}
                raise SettingsMismatch(f"{self.path}: cached generations were made with other "
                                       f"settings {diff}; use another --out or --overwrite")
        else:
            write_json_atomic(meta, self.settings)
        self.done: dict[str, list[str]] = {}
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for k, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if k == len(lines) - 1:
                        continue  # torn last line
                    raise
                self.done[str(rec["key"])] = rec["outputs"]
            if lines and not self.path.read_text(encoding="utf-8").endswith("\n"):
                # drop the torn tail so that appends start on a fresh line
                from repro.runs import write_text_atomic

                write_text_atomic(self.path, "".join(l + "\n" for l in lines[:-1]))

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if str(k) not in self.done]

    def run(self, backend: Backend, keys: Sequence[str], prompts: Sequence[str], *,
            chunk: int = 64, on_chunk: Callable[[int], None] | None = None, **sampling
            ) -> dict[str, list[str]]:
        """Generate what is missing, ``chunk`` prompts per backend call, appending each to disk."""
        from repro.runs import append_jsonl

        todo = [(k, p) for k, p in zip(keys, prompts) if str(k) not in self.done]
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            outs = backend.generate([p for _, p in part], **sampling)
            if len(outs) != len(part):
                raise RuntimeError(f"backend returned {len(outs)} results for {len(part)} prompts")
            for (k, _), o in zip(part, outs):
                append_jsonl(self.path, {"key": str(k), "outputs": list(o)})
                self.done[str(k)] = list(o)
            if on_chunk:
                on_chunk(len(part))
        return {str(k): self.done[str(k)] for k in keys}
