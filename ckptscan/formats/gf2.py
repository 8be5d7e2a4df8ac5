"""Linear maps over GF(2) on 32-bit words: the arithmetic of combining CRCs.

A CRC register is a vector of 32 bits, and each step a CRC takes (one more zero bit or
byte, a multiplication by a fixed polynomial) is a linear map on it. A map is given as
the list of the images of bits 0..31, its matrix's columns. Both CRC combiners use
these: the zip member patcher (:mod:`ckptscan.patch.zipcrc`, CRC-32) and the run
checksums of a TensorFlow bundle (:mod:`.tfbundle.crc`, CRC32C).
"""

from __future__ import annotations


def times(mat: list[int], vec: int) -> int:
    """``mat`` applied to ``vec``: the XOR of the images of ``vec``'s set bits."""
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def square(mat: list[int]) -> list[int]:
    """``mat`` applied twice, as a map."""
    return [times(mat, mat[n]) for n in range(32)]
