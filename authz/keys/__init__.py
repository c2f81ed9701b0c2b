"""Where an issuer's signing keys come from, and how they are held."""

from authz.keys.keyset import ALGORITHMS, PSS_HASHES, KeySet, KeySetError

__all__ = ["ALGORITHMS", "PSS_HASHES", "KeySet", "KeySetError"]
