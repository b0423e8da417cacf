"""The package's grader held against the ORIGINAL Qwen2.5-Math / SimpleRL-Zoo grader: a seeded
corpus of (response, gold) pairs (``corpus``), the original's verdicts recorded by running it in its
own environment (``orig_driver``, executed there, never imported), and the agreement of the
package's graders with them (``differential``: ``make grader-corpus``, ``make grader-agreement``).
It stands above ``repro.eval`` (the golds are the evaluation's) and ``repro.grading``; nothing
of the evaluation or the graders imports it."""
