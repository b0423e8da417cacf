"""The one stop rule (``repro.stop``) in OpenRLHF 0.11.2's rollouts: ``install()``.

OpenRLHF 0.11.2 passes no stop to vLLM (``trainer/ppo_utils/samples_generator.py:199-207``; no
stop option in ``cli/train_ppo_ray.py``), so a base Qwen2.5 (EOS ``<|endoftext|>``) that writes
``<|im_end|>`` goes on with a made-up next turn until its EOS or the token cap, and the action
mask counts that continuation. Two seams, both on ``SamplesGenerator`` (which runs in the PPO
trainer's Ray actor: ``install()`` is called there, first thing in ``patches``'
``_LambdaPPOTrainerBase.__init__``; the driver that runs ``patches.install()`` never generates):

* ``_dispatch_prompts_to_vllm`` (``samples_generator.py:195-241``) builds one ``SamplingParams``
  from the module-global name ``SamplingParams`` (imported at :7). While the wrapped method runs,
  that name builds the stock object plus ``stop_token_ids`` = the end markers that are one token
  of the generator's tokenizer (``repro.stop.marker_token_ids``; Qwen2.5: 151645, 151643, the ids
  SimpleRL-Zoo passes) and ``stop`` = the other markers as strings (``</s>``). vLLM then ends the
  response at the marker, the marker token kept as its last token.
* ``_process_response_into_experience`` (:243-310): before the stock method, a single-turn
  response is cut after its first stop token (``repro.stop.response_length``: the prompt, the
  action range and the rollout log-probs), so the action mask ends at the stop token whatever the
  engine did; after it, the Experience's ``info`` gets the stop kind as four 0/1 values
  (``stop_marker``, ``stop_eos``, ``stop_length``, ``stop_other``), which
  ``metrics.rollout_stats`` turns into per-step shares.

The reward is computed in the vLLM actor on the decoded response (``reward_fn.py``), which grades
it up to its first end marker (``repro.stop.cut``), the same text.
"""
from __future__ import annotations

import contextvars
import functools

import torch

import openrlhf.trainer.ppo_utils.samples_generator as _sg
from repro.stop import SHARE_KEYS, eos_token_ids, marker_token_ids, response_length, stop_kind, string_markers

STOCK_SAMPLING_PARAMS = _sg.SamplingParams
STOCK_DISPATCH = _sg.SamplesGenerator._dispatch_prompts_to_vllm
STOCK_PROCESS = _sg.SamplesGenerator._process_response_into_experience

# (stop_token_ids, stop strings) of the generator whose dispatch is running
_STOPS: contextvars.ContextVar = contextvars.ContextVar("lgrpo_stops", default=None)


def stops_for(tokenizer) -> tuple[list[int], list[str]]:
    """(stop token ids, stop strings) of the rule for ``tokenizer``."""
    return marker_token_ids(tokenizer), string_markers(tokenizer)


def sampling_params(**kw):
    """``vllm.SamplingParams(**kw)`` with the rule's stops added (inside a wrapped dispatch)."""
    stops = _STOPS.get()
    if stops is not None:
        ids, strings = stops
        kw["stop_token_ids"] = list(dict.fromkeys([*(kw.get("stop_token_ids") or []), *ids]))
        kw["stop"] = list(dict.fromkeys([*(kw.get("stop") or []), *strings]))
    return STOCK_SAMPLING_PARAMS(**kw)


def _dispatch(self, *args, **kwargs):
    token = _STOPS.set(stops_for(self.tokenizer))
    try:
        return STOCK_DISPATCH(self, *args, **kwargs)
    finally:
        _STOPS.reset(token)


def cut_response(response: dict, stop_ids) -> dict:
    """A copy of one engine response (``agent.py:266-283``) cut after the first stop token of its
    action; multi-turn responses (several action ranges) are returned unchanged."""
    ranges = response["action_ranges"]
    if len(ranges) != 1:
        return response
    start, end = ranges[0]
    obs = list(response["observation_tokens"])
    n = response_length(obs[start:end], stop_ids)
    if start + n == end:
        return response
    out = dict(response)
    out["observation_tokens"] = obs[:start + n]
    out["action_ranges"] = [(start, start + n)]
    if response.get("rollout_log_probs") is not None:
        out["rollout_log_probs"] = list(response["rollout_log_probs"])[:start + n]
    out["truncated"] = False  # it ended at a stop token
    return out


def _process(self, response, **kwargs):
    tok = getattr(self, "tokenizer", None)
    if tok is None:  # a generator built without a tokenizer (tests' canned responses): stock
        return STOCK_PROCESS(self, response, **kwargs)
    marker_ids = marker_token_ids(tok)
    eos_ids = eos_token_ids(tok)
    stop_ids = list(dict.fromkeys([*marker_ids, *eos_ids]))
    response = cut_response(response, stop_ids)
    exp = STOCK_PROCESS(self, response, **kwargs)
    start, end = response["action_ranges"][-1]
    kind = stop_kind(response["observation_tokens"][start:end], marker_ids=marker_ids, eos_ids=eos_ids,
                     truncated=bool(response.get("truncated", False)))
    for key in SHARE_KEYS:
        exp.info[key] = torch.tensor([float(key == f"stop_{kind}")])
    return exp


def install() -> None:
    """Patch the two seams (idempotent). Called in the process that runs the samples generator."""
    cls = _sg.SamplesGenerator
    if getattr(cls._dispatch_prompts_to_vllm, "_lgrpo_stop", False):
        return
    _sg.SamplingParams = sampling_params
    dispatch = functools.wraps(STOCK_DISPATCH)(_dispatch)
    process = functools.wraps(STOCK_PROCESS)(_process)
    dispatch._lgrpo_stop = process._lgrpo_stop = True
    cls._dispatch_prompts_to_vllm = dispatch
    cls._process_response_into_experience = process


def uninstall() -> None:
    """Restore the stock code (tests)."""
    _sg.SamplingParams = STOCK_SAMPLING_PARAMS
    _sg.SamplesGenerator._dispatch_prompts_to_vllm = STOCK_DISPATCH
    _sg.SamplesGenerator._process_response_into_experience = STOCK_PROCESS
