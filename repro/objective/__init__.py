"""The paper's math, in one place: token-preference weights, the unified objective, λ.

A package of four modules, one idea each, imported as one namespace (``from repro import objective
as O``; every name below is ``O.<name>``): ``weights`` (the inputs' checks, Eq. 11-16),
``methods`` (the registry of token preferences), ``surrogate`` (Eq. 3, the clipped surrogate,
Eq. 7 per group, Eq. 20) and ``loss`` (the training loss, λ's own optimizer).

Everything in the package that computes a weight, an advantage or a policy loss imports it
from here. Pure PyTorch; no training framework is imported.

Paper equations and where they live
-----------------------------------
Eq. 3   ``eq3_group_advantages``     group-normalised advantage (sample std; or none, Dr.GRPO)
Eq. 4-6 the per-method objectives; they are Eq. 7 with the weights below (tests check this)
Eq. 7   ``eq7_unified_objective``    J per group from per-response surrogate sums L_i
        ``policy_loss``              the same objective as a *sum of per-sample terms*, exact
                                     under any split of a step into micro-batches / ranks
Eq. 8   ``grpo_weights``             f = μ/|o_i|
Eq. 9   ``dapo_weights``             f = 1
Eq. 10  ``dr_grpo_weights``          f = μ
Eq. 11-14 ``eq13_standardize``, ``eq14_h``   z = (|o_i|-μ)/σ,  h = 1 + r·z
Eq. 15  ``eq15_g``                   g = h^λ
Eq. 16  ``eq16_lambda_weights``      f = G·softmax(g)
Eq. 20  ``eq20_lambda_grad``         closed-form ∂J/∂λ per group
        ``METHODS``, ``Method``      each method as one object: name, label, its parameters (a
        ``Weighting``                small dataclass), learnable or not, f; a method with its parameters
        ``LearnableLambda``          λ (init 0) with its own SGD (lr 0.1, no weight decay) and a
                                     data-parallel gradient average at the accumulation boundary

Conventions (pinned; see README "Choices")
------------------------------------------
* σ of the lengths (Eq. 12) is the *sample* standard deviation (Bessel, ddof = 1), the same
  convention as the advantage of Eq. 3 and as ``torch.std``.  ``sigma="population"`` is
  available for comparison with implementations that use ddof = 0.
* σ = 0 (all G lengths equal, e.g. every response hit the length cap) gives z = 0, so h = 1,
  g = 1 and f = 1 for every λ: the group is weighted like DAPO.
* h ≤ 0 makes h^λ undefined. With sample σ, |z| ≤ (G-1)/√G (Samuelson), so r = 1/9 is safe for
  G ≤ 82. Where some h ≤ 0 a ``ValueError`` names r, G and the offending z; nothing is clamped.
* Groups need G ≥ 2 (a group-relative weight or advantage of one response is meaningless):
  G = 1 is a ``ValueError``.
* Lengths must be finite and ≥ 0. A zero-length response is allowed where its weight is defined
  (dapo, dr_grpo, lambda); ``grpo`` (μ/0) and ``delta_l`` (0^-α) reject it, and a group whose
  lengths are all zero has no tokens to normalise by and is rejected by the objective.
* Sign: the objective J is maximised; ``policy_loss`` returns -J (plus KL and entropy terms)
  for a minimiser. λ is trained by SGD on that same loss, i.e. by gradient ascent on J.
"""
from __future__ import annotations

import dataclasses
import math
from repro.objective.weights import (  # noqa: E402
    PAPER_R,
    SIGMA_CONVENTIONS,
    check_lengths,
    eq13_standardize,
    eq14_h,
    eq15_g,
    eq16_lambda_weights,
    max_abs_z,
)
from repro.objective.methods import (  # noqa: E402
    METHODS,
    DeltaLParams,
    LambdaParams,
    Method,
    NoParams,
    Weighting,
    as_weighting,
    dapo_weights,
    delta_l_weights,
    dr_grpo_weights,
    get_method,
    grpo_weights,
    lambda_weights,
    register_method,
    token_weights,
)
from repro.objective.surrogate import (  # noqa: E402
    clipped_surrogate,
    eq20_lambda_grad,
    eq3_group_advantages,
    eq7_unified_objective,
    surrogate_from_log_ratio,
    surrogate_sums,
    within_group_cov,
)
from repro.objective.loss import (  # noqa: E402
    SCOPES,
    LearnableLambda,
    LossOutput,
    policy_loss,
    sample_weights,
    step_denominator,
)

__all__ = [
    "DeltaLParams",
    "LambdaParams",
    "LearnableLambda",
    "LossOutput",
    "METHODS",
    "Method",
    "NoParams",
    "PAPER_R",
    "SCOPES",
    "SIGMA_CONVENTIONS",
    "Weighting",
    "as_weighting",
    "check_lengths",
    "clipped_surrogate",
    "dapo_weights",
    "delta_l_weights",
    "dr_grpo_weights",
    "eq13_standardize",
    "eq14_h",
    "eq15_g",
    "eq16_lambda_weights",
    "eq20_lambda_grad",
    "eq3_group_advantages",
    "eq7_unified_objective",
    "get_method",
    "grpo_weights",
    "lambda_weights",
    "max_abs_z",
    "policy_loss",
    "register_method",
    "sample_weights",
    "step_denominator",
    "surrogate_from_log_ratio",
    "surrogate_sums",
    "token_weights",
    "within_group_cov",
]
