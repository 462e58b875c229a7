"""Stable seeds for every random draw: masks, sampling order, clip positions, crops.

All randomness in the product derives from `derive_seed(run seed, ...integers or strings...)`, a keyed hash
(blake2b) that gives the same value in every process, worker and Python version (Python's `hash()` is salted
per process), and unrelated seeds for nearby tuples. Data and masks are therefore pure functions of
(seed, step, index), whatever the number of processes or loader workers.
"""

from __future__ import annotations

import hashlib
import struct

import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (hash, so nearby tuples give unrelated seeds)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, str):
            b = p.encode()
            h.update(b"s" + struct.pack("<q", len(b)) + b)
        else:
            h.update(b"i" + int(p).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def make_generator(*parts: int | str) -> torch.Generator:
    """A CPU torch.Generator seeded with derive_seed(*parts)."""
    return torch.Generator().manual_seed(derive_seed(*parts))
