"""TEST-ONLY stub (see tests/openrlhf_stubs/README.md)."""


def random_uuid():
    raise RuntimeError("vllm is a test stub here")
