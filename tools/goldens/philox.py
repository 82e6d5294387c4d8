"""Numpy reference of sdc's noise: Philox4x32-10 plus Box-Muller.

This mirrors src/common/philox.h and is the definition the C code is tested
against (tests/data/goldens/philox.safetensors).

    block b = i // 4, key = (seed & 0xffffffff, seed >> 32),
    counter = (b & 0xffffffff, b >> 32, stream, 0) -> u[0..3] = Philox4x32-10
    f(u) = (u + 0.5) / 2**32                       (float64, in (0, 1))
    (u0, u1) -> elements 4b, 4b+1; (u2, u3) -> 4b+2, 4b+3:
    r = sqrt(-2 ln f(a)), t = 2 pi f(b); first = r cos t, second = r sin t
    computed in float64, rounded once to float32.

Streams (philox.h): 0 = initial latent noise, 1 = the VAE posterior sample
of image-to-image.

Run as a script to check the Random123 known-answer vectors.
"""

import numpy as np

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def _mulhilo(m, x):
    """(hi, lo) 32-bit halves of the 64-bit product m * x (x: uint32 array)."""
    p = m * x.astype(np.uint64)
    return (p >> _SHIFT32).astype(np.uint32), (p & _MASK32).astype(np.uint32)


def philox4x32_10(ctr, key):
    """Philox4x32 with 10 rounds, vectorised.

    ctr: uint32 array [..., 4]; key: uint32 array [..., 2] (broadcastable).
    Returns uint32 array [..., 4]. Follows Random123's philox4x32round:
      hi0, lo0 = mulhilo(M0, c0); hi1, lo1 = mulhilo(M1, c2)
      c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    with the key bumped by (W0, W1) between rounds.
    """
    ctr = np.asarray(ctr, dtype=np.uint32)
    key = np.asarray(key, dtype=np.uint32)
    c0, c1, c2, c3 = (ctr[..., j].copy() for j in range(4))
    k0 = np.broadcast_to(key[..., 0], c0.shape).copy()
    k1 = np.broadcast_to(key[..., 1], c0.shape).copy()
    with np.errstate(over="ignore"):
        for rnd in range(10):
            if rnd > 0:
                k0 = (k0 + PHILOX_W0).astype(np.uint32)
                k1 = (k1 + PHILOX_W1).astype(np.uint32)
            hi0, lo0 = _mulhilo(PHILOX_M0, c0)
            hi1, lo1 = _mulhilo(PHILOX_M1, c2)
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1)


STREAM_LATENT = 0
STREAM_VAE_POSTERIOR = 1
STREAM_REFINER_COND = 2


def philox_uniform_u32(seed, nblocks, first_block=0, stream=STREAM_LATENT):
    """Raw Philox output words for blocks first_block .. first_block+nblocks-1."""
    seed = int(seed)
    b = np.arange(first_block, first_block + nblocks, dtype=np.uint64)
    ctr = np.zeros((nblocks, 4), dtype=np.uint32)
    ctr[:, 0] = (b & _MASK32).astype(np.uint32)
    ctr[:, 1] = (b >> _SHIFT32).astype(np.uint32)
    ctr[:, 2] = np.uint32(stream)
    key = np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=np.uint32)
    return philox4x32_10(ctr, key)


def philox_normal(seed, n, offset=0, stream=STREAM_LATENT):
    """Elements offset .. offset+n-1 of standard normal stream `stream` for seed (float32)."""
    if n <= 0:
        return np.zeros((0,), dtype=np.float32)
    first_block = offset // 4
    last_block = (offset + n - 1) // 4
    u = philox_uniform_u32(seed, last_block - first_block + 1, first_block, stream)
    f = (u.astype(np.float64) + 0.5) / 4294967296.0
    out = np.empty((u.shape[0], 4), dtype=np.float64)
    for a, b in ((0, 1), (2, 3)):
        r = np.sqrt(-2.0 * np.log(f[:, a]))
        t = 2.0 * np.pi * f[:, b]
        out[:, a] = r * np.cos(t)
        out[:, b] = r * np.sin(t)
    flat = out.reshape(-1).astype(np.float32)
    start = offset - first_block * 4
    return flat[start : start + n].copy()


def philox_noise(seed, shape, stream=STREAM_LATENT):
    """Noise tensor of the given shape: elements 0..prod(shape)-1 in C order."""
    n = int(np.prod(shape))
    return philox_normal(seed, n, stream=stream).reshape(shape)


KNOWN_ANSWERS = [
    # (counter, key, expected) from Random123's kat_vectors (philox4x32 10 rounds)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def check_known_answers():
    for ctr, key, want in KNOWN_ANSWERS:
        got = philox4x32_10(np.array(ctr, dtype=np.uint32), np.array(key, dtype=np.uint32))
        got = tuple(int(x) for x in got)
        if got != want:
            raise AssertionError(
                "philox4x32_10(%s, %s) = %s, want %s"
                % ([hex(x) for x in ctr], [hex(x) for x in key], [hex(x) for x in got], [hex(x) for x in want])
            )


def _self_check():
    check_known_answers()
    # Any split of the stream gives the same values.
    full = philox_normal(42, 4099)
    for off, n in ((0, 1), (1, 6), (3, 9), (4094, 5), (1001, 1234)):
        part = philox_normal(42, n, offset=off)
        assert np.array_equal(part, full[off : off + n]), (off, n)
    other = philox_normal(42, 4099, stream=STREAM_VAE_POSTERIOR)
    assert not np.any(other == full), "streams 0 and 1 share values"
    for off, n in ((0, 1), (3, 9), (1001, 1234)):
        part = philox_normal(42, n, offset=off, stream=STREAM_VAE_POSTERIOR)
        assert np.array_equal(part, other[off : off + n]), (off, n)
    big = philox_normal((1 << 40) + 7, 1000)
    assert np.isfinite(big).all()
    m, s = float(full.mean()), float(full.std())
    assert abs(m) < 0.1 and abs(s - 1.0) < 0.1, (m, s)


if __name__ == "__main__":
    _self_check()
    print("philox: known answers OK")
    print("seed 42, first 8:", philox_normal(42, 8))
