"""TEST-ONLY stub of vllm (see tests/openrlhf_stubs/README.md). Never used on a GPU."""
__version__ = "0.0.0+test-stub"
STUB = True


class SamplingParams:  # only constructed by the sample generator, which the tests never run
    def __init__(self, *a, **k):
        raise RuntimeError("vllm is a test stub here; generation is GPU-only")
