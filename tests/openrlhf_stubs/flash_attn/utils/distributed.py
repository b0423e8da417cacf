"""TEST-ONLY stub (see tests/openrlhf_stubs/README.md)."""
from flash_attn.bert_padding import _unavailable as all_gather  # noqa: F401
