"""Entropy coding for nc payloads: categorical ANS, scale-table Gaussian/Laplace, bit-packing.

Every table that shapes a bitstream is integers, so encoder and decoder agree on
every machine. Floats reach the ANS coder only as `freq / row_sum` in float64, which
IEEE division rounds identically everywhere (constriction quantises them with
integer-exact, FMA-free arithmetic). The scale tables are derived once from libm's
erfc/exp and rounded to integers; `ScaleTableCoder.table_sha256` is pinned by a
test so a libm that yields different tables fails loudly, not with undecodable files.

Speed: constriction codes ~10**8 symbols/s when one model codes an array, ~100x
less with a model per symbol. So symbols are grouped by table row (stable order)
and each group is coded with one model. The decoder has the same grouping keys
(contexts / scale indices are side information it already holds).

Byte layouts (integers little-endian unless stated):

* Frequency table (`FrequencyTable.to_bytes`): u32 contexts, u32 alphabet, then
  contexts*alphabet u32 frequencies, row-major (all of context 0 first).
* Categorical payload (`encode_categorical`): only the ANS coder's u32 words.
  Symbols are coded in context order (context 0's symbols in input order, then
  context 1's, ...). Empty when nothing costs bits (no symbols, or alphabet 1).
* Scale-table payload (`ScaleTableCoder.encode`): u32 header, its low 31 bits
  n_words and its top bit the escape format; n_words u32 ANS words coding one
  symbol per value, grouped by scale index like contexts; then the escaped values
  (input order). The symbol for value x is r + R_s with r = x - rint(mean) if
  |r| <= R_s, else the escape symbol 2*R_s + 1. Escape formats:
  - top bit 0 ("i32", what nc wrote before 2026-11-27): one i32 per escaped
    value, holding the value itself;
  - top bit 1 ("gamma"): per escaped value the Elias-gamma code of n = |r| - R_s
    (>= 1: floor(log2 n) zero bits, then n in binary, MSB first) and a sign bit
    (1: r < 0), all concatenated MSB first; the last byte zero-padded. An escape
    takes 2 bits where its excess is 1 (the most common case) instead of 32.
* Bit-packed payload (`pack_bits`): each symbol in `bits` bits, most significant
  bit first, concatenated; bytes filled MSB first; the last byte is zero-padded,
  so the length is exactly ceil(count * bits / 8).
"""
from __future__ import annotations

import hashlib
import math
import operator
import struct

import constriction
import numpy as np

from nc.errors import FormatError

# constriction's submodules are extension attributes, not importable modules.
AnsCoder = constriction.stream.stack.AnsCoder
Categorical = constriction.stream.model.Categorical

MAX_ALPHABET = 2**16
MAX_TABLE_ENTRIES = 2**22  # contexts * alphabet: 16 MiB of u32 at most
MAX_COUNT = 2**26  # default cap on decoded symbols when the data cannot bound it
# 64 standard deviations log-spaced over [0.11, 64] (CompressAI uses the same
# range). Rounded to 6 decimals so a last-ulp difference in a platform's
# geomspace cannot move an entry.
SCALES = np.round(np.geomspace(0.11, 64.0, 64), 6)
SCALE_TOTAL = 2**16  # every scale table's frequencies sum to this
MAX_RADIUS = 256  # residual range [-R_s, R_s] is capped at 256: at most 514 symbols
# R_s = ceil(k * std): tail mass beyond R_s + 0.5 is < 1e-6 for both families,
# so the escape symbol gets about its floor of 1/2**16.
_TAIL_K = {"gaussian": 5.0, "laplace": 10.0}
_CHUNK = 2**18  # bit-packing works in chunks to bound the 32x bit expansion
ESCAPE_FORMATS = ("i32", "gamma")  # a scale-table payload's header bit 31 = the index here
_GAMMA_FLAG = 1 << 31


# --- validation helpers -----------------------------------------------------------

def _ints(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (a.dtype.kind not in "iu" and a.size):
        raise ValueError(f"{name} must be a 1-D integer array")
    return a.astype(np.int64, copy=False)


def _in_range(a: np.ndarray, lo: int, hi: int, name: str) -> None:
    if a.size and (a.min() < lo or a.max() >= hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi})")


def _count(count, max_count: int) -> int:
    count = operator.index(count)
    if not 0 <= count <= max_count:  # counts come from headers: a bad one is bad data
        raise FormatError(f"symbol count {count} outside [0, {max_count}]")
    return count


# --- grouping and the ANS stack ---------------------------------------------------

def _plan(keys, n: int, n_keys: int):
    """Stable grouping of n symbols by key: (order or None, [(key, start, stop)])."""
    if keys is None:
        return None, ([(0, 0, n)] if n else [])
    keys = _ints(keys, "contexts")
    if keys.size != n:
        raise ValueError(f"{keys.size} contexts for {n} symbols")
    _in_range(keys, 0, n_keys, "contexts")
    # uint16 keys let numpy use its O(n) radix sort for the stable argsort.
    order = np.argsort(keys.astype(np.uint16) if n_keys <= 2**16 else keys, kind="stable")
    counts = np.bincount(keys, minlength=n_keys)
    stops = np.cumsum(counts)
    present = np.flatnonzero(counts)
    return order, [(int(k), int(stops[k] - counts[k]), int(stops[k])) for k in present]


def _ans_encode(runs) -> bytes:
    """Code [(model, int32 symbols)] so that decoding yields the runs in order."""
    coder = AnsCoder()
    for model, symbols in reversed(runs):  # ANS is a stack: push the last run first
        if model is not None:  # a 1-symbol alphabet carries no information
            coder.encode_reverse(np.ascontiguousarray(symbols, np.int32), model)
    return coder.get_compressed().astype("<u4", copy=False).tobytes()


def _ans_coder(data: bytes) -> AnsCoder:
    """An ANS decoder over a payload's u32 words; FormatError for a payload that cannot be one."""
    if len(data) % 4:
        raise FormatError("ANS data is not a whole number of 32-bit words")
    try:
        return AnsCoder(np.frombuffer(data, "<u4").astype(np.uint32))
    except ValueError as e:
        raise FormatError(f"corrupt ANS data: {e}") from None


def _decode_runs(coder: AnsCoder, runs, out: np.ndarray) -> None:
    """Decode [(model, start, stop)] runs into out[start:stop]. (An empty stream is valid: a few likely
    symbols fit in the coder's initial state and leave no words.)"""
    try:
        for model, start, stop in runs:
            if model is not None:
                out[start:stop] = coder.decode(model, stop - start)
    except (ValueError, KeyError, RuntimeError, OverflowError) as e:
        raise FormatError(f"corrupt ANS data: {e}") from None


def _check_ended(coder: AnsCoder) -> None:
    # A valid stream leaves the coder exactly empty; leftover or missing words mean
    # truncation or corruption (most, not all, corruption is caught this way).
    if not coder.is_empty():
        raise FormatError("ANS data does not end where its symbols do")


def _ans_decode(data: bytes, runs, n: int) -> np.ndarray:
    """Decode [(model, start, stop)] runs into one int32 array of n symbols."""
    coder, out = _ans_coder(data), np.zeros(n, np.int32)
    _decode_runs(coder, runs, out)
    _check_ended(coder)
    return out


def _unsort(ordered: np.ndarray, order) -> np.ndarray:
    if order is None:
        return ordered
    out = np.empty_like(ordered)
    out[order] = ordered
    return out


# --- categorical ------------------------------------------------------------------

class FrequencyTable:
    """Integer frequencies, shape (contexts, alphabet), all in [1, 2**32): one row per context.

    Every symbol has nonzero probability, so any in-range symbol can be coded.
    Bounds: alphabet <= 2**16, contexts * alphabet <= 2**22; a row sum is then
    < 2**48, exact in float64.
    """

    def __init__(self, freqs):
        f = np.asarray(freqs)
        f = f[None, :] if f.ndim == 1 else f
        if f.ndim != 2 or f.dtype.kind not in "iu":
            raise ValueError("frequencies must be a 1-D or 2-D integer array")
        contexts, alphabet = f.shape
        if not (1 <= alphabet <= MAX_ALPHABET and 1 <= contexts and f.size <= MAX_TABLE_ENTRIES):
            raise ValueError(f"table shape {f.shape} out of bounds")
        if f.min() < 1 or f.max() > 2**32 - 1:
            raise ValueError("frequencies must lie in [1, 2**32)")
        self.freqs = f.astype(np.uint32)
        self.freqs.flags.writeable = False  # immutable, so cached models stay valid
        self._totals = self.freqs.sum(axis=1, dtype=np.uint64).astype(np.float64)
        self._models: dict[int, Categorical] = {}

    @classmethod
    def from_counts(cls, counts, floor: int = 1) -> "FrequencyTable":
        """Table from observed counts plus `floor`, so unseen symbols stay codable."""
        c = np.asarray(counts)
        if c.dtype.kind not in "iu" or (c.size and c.min() < 0) or floor < 0:
            raise ValueError("counts and floor must be non-negative integers")
        return cls(c.astype(np.int64) + floor)

    @classmethod
    def uniform(cls, alphabet: int, contexts: int = 1) -> "FrequencyTable":
        return cls(np.ones((contexts, alphabet), np.uint32))

    @property
    def contexts(self) -> int:
        return self.freqs.shape[0]

    @property
    def alphabet(self) -> int:
        return self.freqs.shape[1]

    def model(self, context: int = 0):
        """Cached constriction model for one row; None for alphabet 1 (costs no bits)."""
        m = self._models.get(context)
        if m is None and self.alphabet > 1:
            row = self.freqs[context].astype(np.float64)
            m = self._models[context] = Categorical(row / self._totals[context], perfect=False)
        return m

    def cross_entropy_bits(self, symbols, contexts=None) -> float:
        """Ideal code length in bits of `symbols` under this table."""
        s = _ints(symbols, "symbols")
        _in_range(s, 0, self.alphabet, "symbols")
        c = np.zeros(s.size, np.int64) if contexts is None else _ints(contexts, "contexts")
        if c.size != s.size:
            raise ValueError(f"{c.size} contexts for {s.size} symbols")
        _in_range(c, 0, self.contexts, "contexts")
        return float(-np.log2(self.freqs[c, s] / self._totals[c]).sum())

    def to_bytes(self) -> bytes:
        return struct.pack("<II", *self.freqs.shape) + self.freqs.astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data) -> "FrequencyTable":
        data = bytes(data)
        if len(data) < 8:
            raise FormatError("frequency table shorter than its 8-byte header")
        contexts, alphabet = struct.unpack_from("<II", data)
        if not (1 <= alphabet <= MAX_ALPHABET and 1 <= contexts * alphabet <= MAX_TABLE_ENTRIES):
            raise FormatError(f"frequency table shape ({contexts}, {alphabet}) out of bounds")
        if len(data) != 8 + 4 * contexts * alphabet:
            raise FormatError("frequency table length does not match its shape")
        f = np.frombuffer(data, "<u4", offset=8).reshape(contexts, alphabet)
        if f.min() == 0:
            raise FormatError("frequency table has a zero frequency")
        return cls(f)

    def __eq__(self, other) -> bool:
        return isinstance(other, FrequencyTable) and np.array_equal(self.freqs, other.freqs)


def encode_categorical(symbols, table: FrequencyTable, contexts=None) -> bytes:
    """ANS-code symbols in [0, table.alphabet); `contexts[i]` picks symbol i's table row."""
    return encode_categorical_pieces([(symbols, contexts)], table)


def decode_categorical(data, table: FrequencyTable, count: int, contexts=None,
                       *, max_count: int = MAX_COUNT) -> np.ndarray:
    """Inverse of `encode_categorical`; returns int32. Bad data raises FormatError."""
    count = _count(count, max_count)  # ANS can code ~0 bits/symbol, so len(data) bounds nothing
    order, runs = _plan(contexts, count, table.contexts)
    ordered = _ans_decode(bytes(data), [(table.model(k), a, b) for k, a, b in runs], count)
    return _unsort(ordered, order)


def encode_categorical_pieces(pieces, table: FrequencyTable) -> bytes:
    """ANS-code [(symbols, contexts)] pieces into one stream that `CategoricalReader` reads back piece
    by piece, for contexts that depend on earlier pieces' symbols. Each piece is coded as
    `encode_categorical` codes it; the payload is those codings concatenated in one stream."""
    runs = []
    for symbols, contexts in pieces:
        s = _ints(symbols, "symbols")
        _in_range(s, 0, table.alphabet, "symbols")
        order, plan = _plan(contexts, s.size, table.contexts)
        ordered = s if order is None else s[order]
        runs += [(table.model(k), ordered[a:b]) for k, a, b in plan]
    return _ans_encode(runs)


class CategoricalReader:
    """Decodes a stream made by `encode_categorical_pieces` one piece at a time: `read(contexts)` returns
    the next piece's symbols, `close()` checks the stream ended exactly there. Bad data raises FormatError."""

    def __init__(self, data, table: FrequencyTable, max_count: int = MAX_COUNT):
        self.table, self.left = table, max_count
        self.coder = _ans_coder(bytes(data))

    def read(self, contexts) -> np.ndarray:
        n = len(contexts)
        if n > self.left:  # ANS can code ~0 bits/symbol, so the data's length bounds nothing
            raise FormatError(f"more than {self.left} symbols asked of one ANS stream")
        self.left -= n
        order, plan = _plan(contexts, n, self.table.contexts)
        out = np.zeros(n, np.int32)
        _decode_runs(self.coder, [(self.table.model(k), a, b) for k, a, b in plan], out)
        return _unsort(out, order)

    def close(self) -> None:
        _check_ended(self.coder)


# --- quantised Gaussian / Laplace with a fixed scale table ------------------------

def _tail(family: str, std: float, t: float) -> float:
    """P(X > t) for t >= 0, X zero-mean with standard deviation `std`."""
    if family == "gaussian":
        return 0.5 * math.erfc(t / (std * math.sqrt(2.0)))
    return 0.5 * math.exp(-t * math.sqrt(2.0) / std)  # Laplace scale b = std / sqrt(2)


def _residual_pmf(family: str, std: float, radius: int) -> np.ndarray:
    """Probabilities of r = -R..R (integer bins of width 1) followed by the escape."""
    tails = np.array([_tail(family, std, k + 0.5) for k in range(radius + 1)])
    side = tails[:-1] - tails[1:]  # P(k - 0.5 < X <= k + 0.5), k = 1..R, precise in the tails
    return np.concatenate([side[::-1], [1.0 - 2.0 * tails[0]], side, [2.0 * tails[-1]]])


def _quantize(p: np.ndarray, total: int) -> np.ndarray:
    """Integers >= 1 summing to `total`, near p * total (largest remainder, ties by index)."""
    scaled = p * (total - p.size)  # the +1 floor below reserves p.size
    freq = np.floor(scaled).astype(np.int64) + 1
    deficit = total - int(freq.sum())
    if not 0 <= deficit < p.size:
        raise RuntimeError("scale table does not normalise")  # p must sum to 1
    freq[np.argsort(np.floor(scaled) - scaled, kind="stable")[:deficit]] += 1
    return freq


def scale_index(stds) -> np.ndarray:
    """Index (int32) of the smallest SCALES entry >= each std, clamped to the table.

    Rounding up never under-states the spread, which would make escapes likelier.
    """
    s = np.asarray(stds, dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError("stds contain NaN")
    return np.minimum(np.searchsorted(SCALES, s, side="left"), len(SCALES) - 1).astype(np.int32)


class ScaleTableCoder:
    """Integer latents coded with a quantised Gaussian/Laplace chosen from SCALES.

    Each value x has a float mean and a scale index (see `scale_index`); the coded
    residual is x - rint(mean). Residuals beyond R_s escape and follow the ANS words (module docstring).
    """

    def __init__(self, family: str = "gaussian"):
        if family not in _TAIL_K:
            raise ValueError(f"family must be one of {sorted(_TAIL_K)}")
        self.family = family
        self.radii = np.minimum(np.ceil(SCALES * _TAIL_K[family]), MAX_RADIUS).astype(np.int64)
        self.tables = tuple(
            FrequencyTable(_quantize(_residual_pmf(family, s, int(r)), SCALE_TOTAL))
            for s, r in zip(SCALES, self.radii))
        # Code length of every (scale, symbol) for cross_entropy_bits; unused cells stay inf.
        self._bits = np.full((len(SCALES), 2 * MAX_RADIUS + 2), np.inf)
        for i, t in enumerate(self.tables):
            self._bits[i, : t.alphabet] = -np.log2(t.freqs[0] / float(SCALE_TOTAL))

    def table_sha256(self) -> str:
        """SHA-256 over family, SCALES and every integer table: pinned by the tests."""
        h = hashlib.sha256(self.family.encode() + SCALES.astype("<f8").tobytes())
        for t in self.tables:
            h.update(t.to_bytes())
        return h.hexdigest()

    def _side(self, means, scale_indices):
        m = np.asarray(means, dtype=np.float64)
        idx = np.asarray(scale_indices)
        if idx.shape != m.shape or (idx.dtype.kind not in "iu" and idx.size):
            raise ValueError("scale_indices must be integers shaped like means")
        idx = idx.astype(np.int64).ravel()
        _in_range(idx, 0, len(SCALES), "scale_indices")
        centre = np.rint(m.ravel())
        if not np.all(np.abs(centre) < 2**31):  # also rejects NaN / inf
            raise ValueError("means must be finite and within int32 range")
        return centre.astype(np.int64), idx

    def _symbols(self, values, means, scale_indices):
        x = np.asarray(values)
        if x.shape != np.shape(means) or (x.dtype.kind not in "iu" and x.size):
            raise ValueError("values must be integers shaped like means")
        x = x.astype(np.int64).ravel()
        _in_range(x, -(2**31), 2**31, "values")
        centre, idx = self._side(means, scale_indices)
        radius = self.radii[idx]
        r = x - centre
        escaped = np.abs(r) > radius
        return x, idx, np.where(escaped, 2 * radius + 1, r + radius), escaped, r

    def cross_entropy_bits(self, values, means, scale_indices, escapes: str = "gamma") -> float:
        """Ideal code length: table bits per symbol plus each escape's bits in the `escapes` format."""
        if escapes not in ESCAPE_FORMATS:
            raise ValueError(f"escapes must be one of {ESCAPE_FORMATS}")
        _, idx, sym, escaped, r = self._symbols(values, means, scale_indices)
        if escapes == "i32":
            extra = 32 * np.count_nonzero(escaped)
        else:
            extra = _gamma_bits(np.abs(r[escaped]) - self.radii[idx[escaped]]).sum()
        return float(self._bits[idx, sym].sum() + extra)

    def residual_bits(self, residuals, scale_indices) -> np.ndarray:
        """Code length in bits ("gamma" escapes) of each integer residual x - rint(mean) at each scale
        index (broadcast together), from the same tables as `cross_entropy_bits`: for estimates that
        try many scales without building a payload."""
        idx = np.asarray(scale_indices, np.int64)
        r = np.asarray(residuals, np.int64)
        radius = self.radii[idx]
        escaped = np.abs(r) > radius
        sym = np.where(escaped, 2 * radius + 1, r + radius)
        excess = np.where(escaped, np.abs(r) - radius, 1)
        return self._bits[idx, sym] + np.where(escaped, _gamma_bits(excess), 0)

    def encode(self, values, means, scale_indices, escapes: str = "gamma") -> bytes:
        """Code int32-range `values` (any shape, flattened in C order); see module docstring.
        `escapes`: how escaped values are stored ("gamma"; "i32" writes the older payloads)."""
        if escapes not in ESCAPE_FORMATS:
            raise ValueError(f"escapes must be one of {ESCAPE_FORMATS}")
        x, idx, sym, escaped, r = self._symbols(values, means, scale_indices)
        order, runs = _plan(idx, x.size, len(SCALES))
        ordered = sym[order]
        words = _ans_encode([(self.tables[k].model(0), ordered[a:b]) for k, a, b in runs])
        if escapes == "i32":
            return struct.pack("<I", len(words) // 4) + words + x[escaped].astype("<i4").tobytes()
        r = r[escaped]
        tail = _gamma_pack(np.abs(r) - self.radii[idx[escaped]], r < 0)
        if len(words) // 4 >= _GAMMA_FLAG:  # 8 GiB of words: the count would spill into the flag
            raise ValueError("too many symbols for one scale-table payload")
        return struct.pack("<I", _GAMMA_FLAG | len(words) // 4) + words + tail

    def decode(self, data, means, scale_indices) -> np.ndarray:
        """Inverse of `encode` (either escape format): int32 values shaped like `means`. Bad data
        raises FormatError."""
        centre, idx = self._side(means, scale_indices)
        data = bytes(data)
        if len(data) < 4:
            raise FormatError("scale-table payload shorter than its 4-byte header")
        header = struct.unpack_from("<I", data)[0]
        end = 4 + 4 * (header & ~_GAMMA_FLAG)
        if end > len(data):
            raise FormatError("scale-table payload shorter than its ANS words")
        order, runs = _plan(idx, idx.size, len(SCALES))
        runs = [(self.tables[k].model(0), a, b) for k, a, b in runs]
        ordered = _ans_decode(data[4:end], runs, idx.size)
        sym = _unsort(ordered, order).astype(np.int64)
        radius = self.radii[idx]
        escaped = sym == 2 * radius + 1
        x = sym - radius + centre
        if header & _GAMMA_FLAG:
            excess, negative = _gamma_unpack(data[end:], int(np.count_nonzero(escaped)))
            magnitude = radius[escaped] + excess
            x[escaped] = centre[escaped] + np.where(negative, -magnitude, magnitude)
        else:
            if len(data) - end != 4 * np.count_nonzero(escaped):
                raise FormatError("scale-table escape values do not match the escape count")
            x[escaped] = np.frombuffer(data, "<i4", offset=end)
        if x.size and (x.min() < -(2**31) or x.max() >= 2**31):
            raise FormatError("decoded value outside int32 range")
        return x.astype(np.int32).reshape(np.shape(means))


# --- Elias-gamma escapes (a scale-table payload's "gamma" format) -----------------

_GAMMA_MAX_ZEROS = 31  # an escape's excess |x - centre| - R_s is below 2^32 (int32 values and centres, R_s >= 1)


def _gamma_bits(excess: np.ndarray) -> np.ndarray:
    """Bits of each escape's code: Elias gamma of its excess (>= 1) and a sign bit."""
    return 2 * _bit_length(excess)


def _bit_length(n: np.ndarray) -> np.ndarray:
    """floor(log2 n) + 1 of integers 1 <= n < 2^53, exactly: such n are exact in float64, whose binary
    exponent (frexp: n = m 2^e, 1/2 <= m < 1) is that length (float log2 can round up below a power of 2)."""
    return np.frexp(np.asarray(n, np.float64))[1].astype(np.int64)


def _gamma_pack(excess: np.ndarray, negative: np.ndarray) -> bytes:
    """Each (excess >= 1, sign) as its Elias-gamma code and a sign bit, MSB first, zero-padded."""
    length = _bit_length(excess)  # bits of n in binary; the code starts with length - 1 zeros
    width = 2 * length
    starts = np.concatenate([[0], np.cumsum(width)[:-1]]).astype(np.int64)
    bits = np.zeros(int(width.sum()), np.uint8)
    for k in range(int(length.max(initial=0))):  # bit k of n (0: least significant), where n has it
        has = length > k
        bits[(starts + 2 * length - 2 - k)[has]] = (excess[has] >> k) & 1
    bits[starts + width - 1] = negative
    return np.packbits(bits).tobytes()


def _gamma_unpack(data: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(excess int64, negative bool) of `count` codes that fill `data` to its zero padding;
    FormatError for any other data."""
    if len(data) * 8 < 2 * count or len(data) > -(-(2 * _GAMMA_MAX_ZEROS + 2) * count // 8):
        raise FormatError("scale-table escape values do not match the escape count")
    # the bits as the text "0101...": str.find and int(text, 2) parse each code in C
    bits = (np.unpackbits(np.frombuffer(data, np.uint8)) + ord("0")).tobytes().decode("ascii")
    excess, negative = np.empty(count, np.int64), np.empty(count, bool)
    pos = 0
    for i in range(count):
        one = bits.find("1", pos)  # the code's leading 1, after `zeros` zeros
        zeros = one - pos
        if one < 0 or zeros > _GAMMA_MAX_ZEROS or one + zeros + 1 >= len(bits):
            raise FormatError("scale-table escape code runs past its data")
        excess[i] = int(bits[one:one + zeros + 1], 2)
        negative[i] = bits[one + zeros + 1] == "1"
        pos = one + zeros + 2
    if len(bits) - pos >= 8 or "1" in bits[pos:]:
        raise FormatError("scale-table escape values do not match the escape count")
    return excess, negative


# --- raw bit-packing --------------------------------------------------------------

def _bits(bits) -> int:
    bits = operator.index(bits)
    if not 1 <= bits <= 32:
        raise ValueError("bits must lie in 1..32")
    return bits


def pack_bits(symbols, bits: int) -> bytes:
    """Pack symbols in [0, 2**bits), `bits` bits each, MSB first (see module docstring)."""
    bits = _bits(bits)
    s = _ints(symbols, "symbols")
    _in_range(s, 0, 1 << bits, "symbols")
    if bits in (8, 16, 32):  # byte-aligned: the big-endian bytes are the packing
        return s.astype(f">u{bits // 8}").tobytes()
    be = s.astype(">u4").view(np.uint8).reshape(-1, 4)
    # Chunks hold a multiple of 8 symbols, so each fills whole bytes and they concatenate.
    chunks = (np.unpackbits(be[i:i + _CHUNK], axis=1)[:, 32 - bits:]
              for i in range(0, s.size, _CHUNK))
    return b"".join(np.packbits(c).tobytes() for c in chunks)


def unpack_bits(data, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`; returns uint32. Wrong length or nonzero padding: FormatError."""
    bits = _bits(bits)
    count = operator.index(count)
    raw = np.frombuffer(bytes(data), np.uint8)
    if count < 0 or raw.size != (count * bits + 7) // 8:  # checked before allocating
        raise FormatError(f"bit-packed data has {raw.size} bytes, not ceil({count}*{bits}/8)")
    if (count * bits) % 8 and raw[-1] & ((1 << (8 - (count * bits) % 8)) - 1):
        raise FormatError("bit-packed data has nonzero padding bits")
    if bits in (8, 16, 32):
        return np.frombuffer(raw, f">u{bits // 8}").astype(np.uint32)
    out = np.empty(count, np.uint32)
    for i in range(0, count, _CHUNK):
        n = min(_CHUNK, count - i)
        full = np.zeros((n, 32), np.uint8)  # left-pad to 32 bits, then read as big-endian u32
        full[:, 32 - bits:] = np.unpackbits(raw[i * bits // 8:], count=n * bits).reshape(n, bits)
        out[i:i + n] = np.packbits(full, axis=1).view(">u4").ravel()
    return out
