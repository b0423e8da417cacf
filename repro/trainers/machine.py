"""What this machine has, for every engine's machine check (the OpenRLHF and TRL ``reproduce``)."""
from __future__ import annotations


def visible_gpus() -> tuple[list[float], str | None]:
    """The memory (GiB) of each CUDA GPU torch sees, and why they could not be listed (or None)."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(n)], None
    except Exception as e:  # noqa: BLE001 - reported to the user as a plain sentence
        return [], f"cannot query GPUs through torch ({e})"
