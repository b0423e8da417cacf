"""TEST-ONLY stub of flash_attn (see tests/openrlhf_stubs/README.md). Never used on a GPU."""
__version__ = "0.0.0+test-stub"
STUB = True
