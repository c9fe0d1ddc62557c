"""Tests for nc.bitstream.entropy: round trips, efficiency, pinned bitstreams, bad data."""
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nc.bitstream.entropy import (
    ESCAPE_FORMATS,
    MAX_ALPHABET,
    SCALES,
    FrequencyTable,
    ScaleTableCoder,
    decode_categorical,
    encode_categorical,
    pack_bits,
    scale_index,
    unpack_bits,
)
from nc.errors import FormatError

GAUSSIAN = ScaleTableCoder("gaussian")
LAPLACE = ScaleTableCoder("laplace")
CODERS = {"gaussian": GAUSSIAN, "laplace": LAPLACE}

# Pinned on the reference platform. A mismatch means the bitstream changed:
# bump the format version on purpose, never just update the constant.
GAUSSIAN_TABLE_SHA = "f1c8a269861a97b011130161fb28e0cffc7754c83975fea55ee54df34aba48a2"
LAPLACE_TABLE_SHA = "70bcf516753d68fa0e06b39f70e46bf15b569282dbee6ca70cc5f56c1b0ae60a"
GOLDEN_CATEGORICAL_SHA = "6b0a17cd83a2a5d848d21fff4ddfc96773afa0bb93ef91092e23333c54ffe38d"
GOLDEN_SCALE_SHA = "9de93f4064b3fd7691c78bc86beadce5fde13f776ad2c0ebb5afc086f3dcda27"
GOLDEN_SCALE_GAMMA_SHA = "1d2d2c7f386f9af5ba27581bb9ce3acf613014823093ac1b668d6150822b9380"
GOLDEN_PACK_SHA = "b702a4db3d5a0d0a41cd73a63d92294f32af1e7e185ffc4a3ee2693539481a12"

fast = settings(max_examples=60, deadline=None)


def _lcg(n: int, seed: int) -> np.ndarray:
    """Platform- and numpy-version-independent pseudo-random uint64 (for golden inputs)."""
    x = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(6364136223846793005)
    x ^= x >> np.uint64(29)
    x *= np.uint64(1442695040888963407)
    return x ^ (x >> np.uint64(32))


def _sample(freqs: np.ndarray, n: int, rng) -> np.ndarray:
    """n symbols drawn from one row of integer frequencies."""
    return rng.choice(freqs.size, size=n, p=freqs / freqs.sum())


# --- round trips ------------------------------------------------------------------

@fast
@given(seed=st.integers(0, 2**32 - 1), alphabet=st.integers(1, 300), contexts=st.integers(1, 5),
       n=st.sampled_from([0, 1, 2, 7, 100, 1000]), use_contexts=st.booleans(), big=st.booleans())
def test_categorical_round_trip(seed, alphabet, contexts, n, use_contexts, big):
    rng = np.random.default_rng(seed)
    high = 2**32 if big else 1000  # big: frequencies up to the u32 limit
    table = FrequencyTable(rng.integers(1, high, (contexts, alphabet), dtype=np.int64))
    symbols = rng.integers(0, alphabet, n)
    ctx = rng.integers(0, contexts, n) if use_contexts else None
    data = encode_categorical(symbols, table, ctx)
    out = decode_categorical(data, table, n, ctx)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, symbols)


def test_contexts_all_zero_is_the_single_context_stream():
    rng = np.random.default_rng(1)
    table = FrequencyTable.from_counts(rng.integers(0, 50, (3, 20)))
    symbols = rng.integers(0, 20, 500)
    zeros = np.zeros(500, int)
    assert encode_categorical(symbols, table, zeros) == encode_categorical(symbols, table)


def test_alphabet_one_costs_nothing():
    table = FrequencyTable.uniform(1, contexts=2)
    assert encode_categorical(np.zeros(10, int), table, np.arange(10) % 2) == b""
    np.testing.assert_array_equal(decode_categorical(b"", table, 10), np.zeros(10))


@fast
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(["gaussian", "laplace"]),
       n=st.sampled_from([0, 1, 2, 50, 1000]), outliers=st.floats(0, 0.2), escapes=st.sampled_from(ESCAPE_FORMATS))
def test_scale_coder_round_trip(seed, family, n, outliers, escapes):
    rng = np.random.default_rng(seed)
    coder = CODERS[family]
    idx = rng.integers(0, len(SCALES), n)
    means = rng.normal(0, 1000, n).astype(np.float32)  # float32, as a network would give
    values = np.rint(means + rng.normal(0, 1, n) * SCALES[idx])
    wild = rng.random(n) < outliers  # escapes, up to the int32 limits
    values[wild] = rng.integers(-(2**31), 2**31, wild.sum())
    values = np.clip(values, -(2**31), 2**31 - 1).astype(np.int32)
    out = coder.decode(coder.encode(values, means, idx, escapes), means, idx)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, values)


def test_gamma_escapes_layout():
    # mean 0 at scale 0 (radius 1): 3 is escaped with excess 2, -2 with excess 1
    means, idx = np.zeros(2), np.zeros(2, np.int64)
    data = GAUSSIAN.encode(np.array([3, -2]), means, idx)
    words = int.from_bytes(data[:4], "little")
    assert words >> 31 == 1  # the header's top bit: gamma escapes
    # excess 2: "0" "10", sign "0"; excess 1: "1", sign "1"; zero-padded: 0b01001100
    assert data[4 + 4 * (words & 0x7FFFFFFF):] == bytes([0b01001100])
    legacy = GAUSSIAN.encode(np.array([3, -2]), means, idx, "i32")
    assert legacy[4 + 4 * int.from_bytes(legacy[:4], "little"):] == np.array([3, -2], "<i4").tobytes()
    for payload in (data, legacy):
        np.testing.assert_array_equal(GAUSSIAN.decode(payload, means, idx), [3, -2])


def test_gamma_escapes_cost_what_cross_entropy_says():
    rng = np.random.default_rng(7)
    means, idx = rng.normal(0, 5, 5000), rng.integers(0, 64, 5000)
    values = np.rint(means + 4 * rng.standard_t(2, 5000) * SCALES[idx]).astype(np.int32)  # heavy tails
    sizes = {}
    for escapes in ESCAPE_FORMATS:
        data = GAUSSIAN.encode(values, means, idx, escapes)
        sizes[escapes] = len(data)
        assert GAUSSIAN.cross_entropy_bits(values, means, idx, escapes) / 8 == pytest.approx(len(data), rel=0.02, abs=16)
    assert sizes["gamma"] < sizes["i32"]


@pytest.mark.parametrize("escapes", ESCAPE_FORMATS)
def test_scale_coder_codes_the_extreme_escapes(escapes):
    # |r| up to 2^32 - 1: the largest gamma excess (31 leading zeros)
    means = np.array([2**31 - 1.6, -(2**31) + 1.6, 0.5, 1.5, -0.5, 0.0])
    idx = np.array([0, 0, 63, 0, 0, 17])
    values = np.array([-(2**31), 2**31 - 1, 2**31 - 1, -(2**31), 3, -5], np.int32)
    for family, coder in CODERS.items():
        data = coder.encode(values, means, idx, escapes)
        np.testing.assert_array_equal(coder.decode(data, means, idx), values, err_msg=family)


def _gamma_with_padding_bit(tail: bytes) -> bytes:
    """SC_DATA's gamma tail with its first padding bit set (or a byte 0x80 more when the codes fill
    its last byte): where the codes end follows from their lengths, 2 bit_length(excess) each."""
    r = np.abs(SC_VALUES.astype(np.int64) - np.rint(SC_MEANS).astype(np.int64)) - GAUSSIAN.radii[SC_IDX]
    used = sum(2 * int(n).bit_length() for n in r[r > 0])
    if used % 8 == 0:
        return tail + b"\x80"
    bits = np.unpackbits(np.frombuffer(tail, np.uint8))
    bits[used] = 1
    return np.packbits(bits).tobytes()


def _gamma_payload(tail: bytes) -> bytes:
    """SC_DATA's header and ANS words with another gamma tail."""
    return SC_DATA[:4 + 4 * (int.from_bytes(SC_DATA[:4], "little") & 0x7FFFFFFF)] + tail


@pytest.mark.parametrize("damage", ["padding bit", "extra zero byte", "32 zeros", "no tail", "i32 tail"])
def test_malformed_gamma_escapes_raise_format_error(damage):
    words = 4 + 4 * (int.from_bytes(SC_DATA[:4], "little") & 0x7FFFFFFF)
    tail = SC_DATA[words:]
    bad = {"padding bit": SC_DATA[:words] + _gamma_with_padding_bit(tail),
           "extra zero byte": SC_DATA + b"\x00",
           "32 zeros": _gamma_payload(bytes(4) + b"\xff" * len(tail)),
           "no tail": _gamma_payload(b""),
           "i32 tail": _gamma_payload(SC_DATA_I32[4 + 4 * int.from_bytes(SC_DATA_I32[:4], "little"):])}[damage]
    with pytest.raises(FormatError):
        GAUSSIAN.decode(bad, SC_MEANS, SC_IDX)
    with pytest.raises(FormatError):  # and an i32 payload whose header claims gamma escapes
        GAUSSIAN.decode((int.from_bytes(SC_DATA_I32[:4], "little") | 2**31).to_bytes(4, "little") + SC_DATA_I32[4:],
                        SC_MEANS, SC_IDX)


def test_scale_coder_keeps_shape_and_escapes():
    means = np.array([[0.4, -3.6], [1e6, 2.5]])
    idx = np.array([[0, 63], [10, 0]])
    values = np.array([[2**31 - 1, -4], [-(2**31), 2]], np.int32)
    data = GAUSSIAN.encode(values, means, idx)
    out = GAUSSIAN.decode(data, means, idx)
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, values)


@fast
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(1, 32),
       n=st.sampled_from([0, 1, 7, 8, 9, 100]))
def test_pack_bits_round_trip(seed, bits, n):
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, 2**bits, n)
    symbols[: min(n, 2)] = [2**bits - 1, 0][: min(n, 2)]  # both extremes
    data = pack_bits(symbols, bits)
    assert len(data) == (n * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(data, bits, n), symbols)


def test_pack_bits_order_is_msb_first():
    assert pack_bits([1, 0, 1], 1) == bytes([0b10100000])
    assert pack_bits([0b101, 0b011], 3) == bytes([0b10101100])
    assert pack_bits([0x123], 12) == bytes([0x12, 0x30])
    assert pack_bits([0x01020304], 32) == bytes([1, 2, 3, 4])


def test_pack_bits_across_chunks():
    symbols = (_lcg(600_001, 3) % np.uint64(2**13)).astype(np.int64)
    np.testing.assert_array_equal(unpack_bits(pack_bits(symbols, 13), 13, symbols.size), symbols)


# --- tables -----------------------------------------------------------------------

def test_table_bytes_round_trip_and_layout():
    table = FrequencyTable.from_counts([[0, 5, 2], [7, 0, 0]], floor=1)
    assert table.freqs.tolist() == [[1, 6, 3], [8, 1, 1]]
    data = table.to_bytes()
    assert data[:8] == bytes([2, 0, 0, 0, 3, 0, 0, 0]) and data[8:12] == bytes([1, 0, 0, 0])
    assert FrequencyTable.from_bytes(data) == table


@pytest.mark.parametrize("freqs", [
    [[0, 1]], np.ones((1, MAX_ALPHABET + 1), int), [[1.5, 2]], [[2**32, 1]], np.ones((0, 3), int)])
def test_table_rejects_out_of_bounds(freqs):
    with pytest.raises(ValueError):
        FrequencyTable(freqs)


def test_cross_entropy_matches_direct_sum():
    table = FrequencyTable([[1, 3], [2, 2]])
    bits = table.cross_entropy_bits([0, 1, 1], [0, 0, 1])
    assert bits == pytest.approx(-np.log2(1 / 4) - np.log2(3 / 4) - np.log2(1 / 2))


def test_scale_tables_are_normalised_and_pinned():
    for coder in CODERS.values():
        for t in coder.tables:
            assert t.freqs.sum() == 2**16 and t.freqs.min() >= 1 and t.alphabet <= 514
    assert GAUSSIAN.table_sha256() == GAUSSIAN_TABLE_SHA
    assert LAPLACE.table_sha256() == LAPLACE_TABLE_SHA


def test_scale_index_rounds_up_and_clamps():
    np.testing.assert_array_equal(scale_index(SCALES), np.arange(64))
    np.testing.assert_array_equal(scale_index(SCALES[:-1] * 1.0001), np.arange(1, 64))
    np.testing.assert_array_equal(scale_index([0.0, 1e-9, 1e9, np.inf]), [0, 0, 63, 63])
    with pytest.raises(ValueError):
        scale_index([np.nan])


# --- efficiency: coded size vs the model's ideal code length --------------------

def test_categorical_within_one_percent_of_cross_entropy():
    rng = np.random.default_rng(7)
    table = FrequencyTable.from_counts(rng.integers(0, 200, (8, 64)) ** 2)  # skewed rows
    n = 200_000
    ctx = rng.integers(0, 8, n)
    symbols = np.empty(n, np.int64)
    for c in range(8):
        symbols[ctx == c] = _sample(table.freqs[c].astype(float), int((ctx == c).sum()), rng)
    coded = 8 * len(encode_categorical(symbols, table, ctx))
    ideal = table.cross_entropy_bits(symbols, ctx)
    assert abs(coded - ideal) <= 0.01 * ideal, (coded, ideal)


def test_gaussian_within_one_percent_of_cross_entropy():
    rng = np.random.default_rng(8)
    n = 200_000
    idx = rng.integers(0, 64, n)
    means = rng.normal(0, 100, n)
    sym = np.empty(n, np.int64)
    for k in range(64):
        row = GAUSSIAN.tables[k].freqs[0].astype(float)
        sym[idx == k] = _sample(row, int((idx == k).sum()), rng)
    radius = GAUSSIAN.radii[idx]
    residual = np.where(sym == 2 * radius + 1, radius + 1 + rng.integers(0, 1000, n), sym - radius)
    values = (residual + np.rint(means)).astype(np.int32)
    coded = 8 * len(GAUSSIAN.encode(values, means, idx))
    ideal = GAUSSIAN.cross_entropy_bits(values, means, idx)
    assert abs(coded - ideal) <= 0.01 * ideal, (coded, ideal)


# --- golden bitstreams ------------------------------------------------------------

def _golden_categorical() -> bytes:
    freqs = (_lcg(4 * 40, 11) % np.uint64(1000) + np.uint64(1)).reshape(4, 40)
    table = FrequencyTable(freqs.astype(np.int64))
    symbols = (_lcg(5000, 12) % np.uint64(40)).astype(np.int64)
    contexts = (_lcg(5000, 13) % np.uint64(4)).astype(np.int64)
    return encode_categorical(symbols, table, contexts)


def _golden_scale(escapes: str) -> bytes:
    r = _lcg(5000, 21)
    idx = (r % np.uint64(64)).astype(np.int64)
    means = ((r >> np.uint64(8)) % np.uint64(2001)).astype(np.float64) / 10.0 - 100.0
    noise = ((r >> np.uint64(20)) % np.uint64(201)).astype(np.float64) / 50.0 - 2.0
    values = np.rint(means + noise * SCALES[idx]).astype(np.int32)
    values[::997] = 10**6  # a few escapes
    return GAUSSIAN.encode(values, means, idx, escapes)


@pytest.mark.parametrize("make, pinned", [
    (_golden_categorical, GOLDEN_CATEGORICAL_SHA),
    (lambda: _golden_scale("i32"), GOLDEN_SCALE_SHA),  # what nc wrote before gamma escapes: still decodes
    (lambda: _golden_scale("gamma"), GOLDEN_SCALE_GAMMA_SHA),
    (lambda: pack_bits((_lcg(999, 31) % np.uint64(2**11)).astype(np.int64), 11), GOLDEN_PACK_SHA),
])
def test_golden_bitstream(make, pinned):
    assert hashlib.sha256(make()).hexdigest() == pinned


# --- corrupt and truncated data ---------------------------------------------------

def _setup_categorical():
    rng = np.random.default_rng(3)
    table = FrequencyTable.from_counts(rng.integers(0, 100, (3, 30)))
    symbols, ctx = rng.integers(0, 30, 400), rng.integers(0, 3, 400)
    return table, symbols, ctx, encode_categorical(symbols, table, ctx)


CAT_TABLE, CAT_SYMBOLS, CAT_CTX, CAT_DATA = _setup_categorical()
SC_IDX = np.arange(400) % 64
SC_MEANS = np.linspace(-50, 50, 400)
SC_VALUES = np.rint(SC_MEANS + np.sin(np.arange(400)) * 3 * SCALES[SC_IDX]).astype(np.int32)
SC_VALUES[::50] = -(10**7)
SC_VALUES[7::50] += 5
SC_DATA = GAUSSIAN.encode(SC_VALUES, SC_MEANS, SC_IDX)
SC_DATA_I32 = GAUSSIAN.encode(SC_VALUES, SC_MEANS, SC_IDX, "i32")


def _decoders():
    return {
        "categorical": (CAT_DATA, lambda d: decode_categorical(d, CAT_TABLE, 400, CAT_CTX)),
        "scale": (SC_DATA, lambda d: GAUSSIAN.decode(d, SC_MEANS, SC_IDX)),
        "scale_i32": (SC_DATA_I32, lambda d: GAUSSIAN.decode(d, SC_MEANS, SC_IDX)),
        "unpack": (pack_bits(np.arange(400) % 128, 7), lambda d: unpack_bits(d, 7, 400)),
        "table": (CAT_TABLE.to_bytes(), FrequencyTable.from_bytes),
    }


@pytest.mark.parametrize("name", list(_decoders()))
def test_truncation_raises_format_error(name):
    data, decode = _decoders()[name]
    # Empty ANS data is the valid coding of all-zero symbols (state 0 costs nothing),
    # so the bare categorical payload cannot reject a cut to 0 bytes.
    first = 1 if name == "categorical" else 0
    for cut in sorted({first, 1, 3, 4, 5, len(data) // 2, len(data) - 4, len(data) - 1}):
        with pytest.raises(FormatError):
            decode(data[:cut])
    with pytest.raises(FormatError):
        decode(data + b"\x01\x00\x00\x00")  # trailing garbage


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(list(_decoders())), data=st.data())
def test_mutated_data_never_raises_other_errors(name, data):
    original, decode = _decoders()[name]
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(buf))
    except FormatError:
        pass


def test_bad_counts_and_headers_raise_format_error():
    with pytest.raises(FormatError):
        decode_categorical(CAT_DATA, CAT_TABLE, 2**27)  # over max_count: refused before allocating
    with pytest.raises(FormatError):
        decode_categorical(b"", CAT_TABLE, -1)
    with pytest.raises(FormatError):
        # constriction itself rejects data whose last word is zero
        decode_categorical(CAT_DATA + bytes(4), CAT_TABLE, 400, CAT_CTX)
    with pytest.raises(FormatError):
        unpack_bits(b"\x01", 7, 1)  # nonzero padding bit
    with pytest.raises(FormatError):
        FrequencyTable.from_bytes(bytes([1, 0, 0, 0]) + (2**16 + 1).to_bytes(4, "little"))
    with pytest.raises(FormatError):
        FrequencyTable.from_bytes(bytes([1, 0, 0, 0, 2, 0, 0, 0]) + bytes(8))  # zero frequency
    with pytest.raises(FormatError):
        GAUSSIAN.decode(b"\xff\xff\xff\xff", SC_MEANS, SC_IDX)  # gamma escapes after 8 GiB of words


def test_encoders_reject_bad_input():
    with pytest.raises(ValueError):
        encode_categorical([5], FrequencyTable.uniform(5))
    with pytest.raises(ValueError):
        encode_categorical([0, 1], FrequencyTable.uniform(5, 2), contexts=[0, 2])
    with pytest.raises(ValueError):
        pack_bits([8], 3)
    with pytest.raises(ValueError):
        GAUSSIAN.encode([1], [np.nan], [0])
    with pytest.raises(ValueError):
        GAUSSIAN.encode([2**31], [0.0], [0])
