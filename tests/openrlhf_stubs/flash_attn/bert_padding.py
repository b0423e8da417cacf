"""TEST-ONLY stub (see tests/openrlhf_stubs/README.md): importable, raises when called."""


def _unavailable(*_a, **_k):
    raise RuntimeError("flash_attn is a test stub here; ring attention / packing is GPU-only")


index_first_axis = pad_input = unpad_input = _unavailable


def rearrange(*a, **k):
    import einops

    return einops.rearrange(*a, **k)
