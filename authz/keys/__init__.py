"""Where an issuer's signing keys come from, and how they are held."""

from authz.keys.keyset import ALGORITHMS, KeySet, KeySetError

__all__ = ["ALGORITHMS", "KeySet", "KeySetError"]
