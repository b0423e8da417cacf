"""TEST-ONLY stub (see tests/openrlhf_stubs/README.md)."""


def TokensPrompt(*a, **k):  # noqa: N802
    raise RuntimeError("vllm is a test stub here")
