"""chatfile runtime: everything that runs inside the executable.

Public API:
    model = runtime.load(path, offset=0)     # a GGUF file, or one embedded at `offset` in a larger file
    model.logits(token_ids) -> np.ndarray     # float32 [vocab_size]: next-token logits after token_ids
"""
from __future__ import annotations

__version__ = "0.1.0"          # the package version (pyproject.toml reads it from here)


def load(path, offset: int = 0, **kwargs):
    """Open a GGUF (stand-alone, or embedded at byte `offset` of a larger file) and return a Model."""
    from .model import Model
    return Model.load(path, offset=offset, **kwargs)


__all__ = ["load"]
