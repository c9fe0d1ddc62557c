"""Per-channel scale offsets (nc/codecs/scale_offsets.py): the estimate, the choice, the payload, and
image/hvae's files with and without them."""
import numpy as np
import pytest

import nc
from nc.bitstream.entropy import ScaleTableCoder
from nc.codecs import scale_offsets
from nc.codecs.scale_offsets import RADIUS

CODER = ScaleTableCoder("gaussian")


def test_residual_bits_are_the_payload_estimates_bits_value_by_value():
    rng = np.random.default_rng(0)
    index = rng.integers(0, 64, (4, 30, 30))
    values = np.rint(rng.standard_normal(index.shape) * 3 ** rng.integers(0, 6, index.shape)).astype(np.int64)
    assert (np.abs(values) > CODER.radii[index]).any()  # escapes of several sizes count too
    bits = CODER.residual_bits(values, index)
    assert bits.sum() == pytest.approx(CODER.cross_entropy_bits(values, np.zeros(index.shape), index))


def _channels():
    """Four channels whose predicted scale index is 20 (SCALES[20] ~ 0.9): one all zeros, one as
    predicted, one 3 times as wide, one of zeros but for one value in 32 (a spread of ~0.5)."""
    from nc.bitstream.entropy import SCALES

    rng = np.random.default_rng(1)
    shape = (32, 32)
    wide = np.rint(rng.standard_normal(shape) * 3 * SCALES[20])
    fitting = np.rint(rng.standard_normal(shape) * SCALES[20])
    values = np.stack([np.zeros(shape), fitting, wide, np.zeros(shape)]).astype(np.int64)
    values[3].flat[::32] = 1
    return values, np.full(values.shape, 20)


def test_each_channel_gets_the_scale_that_codes_it_in_fewest_bits():
    values, index = _channels()
    offsets, saved = scale_offsets.choose(values, index, CODER)
    assert offsets[0] == -RADIUS  # nothing to code: the narrowest scale reachable
    assert abs(offsets[1]) <= 1
    assert 8 <= offsets[2] <= 14  # 3 times as wide: ~11 steps of ~10 %
    assert -RADIUS < offsets[3] < 0
    plain = CODER.encode(values, np.zeros(values.shape), index)
    shifted = CODER.encode(values, np.zeros(values.shape), scale_offsets.shifted(index, offsets))
    offsets_bits = 8 * len(scale_offsets.pack(offsets))
    # the estimate counts the offsets' own bits and ignores the ANS words' rounding to 32 bits
    assert saved == pytest.approx(8 * (len(plain) - len(shifted)) - offsets_bits, abs=80)


def test_offsets_that_do_not_pay_for_their_bits_stay_zero():
    values, index = _channels()
    offsets, saved = scale_offsets.choose(values[1:2], index[1:2], CODER)
    assert offsets.tolist() == [0]
    assert -4 < saved < 0  # an offset of 0 still costs its ~2 bits: sending it loses


def test_shifted_indices_stay_in_the_table():
    index = np.array([[0, 63], [5, 60]])
    assert scale_offsets.shifted(index, np.array([-RADIUS, RADIUS])).tolist() == [[0, 48], [20, 63]]


def test_offsets_round_trip_and_damaged_ones_are_clean_errors():
    offsets = np.arange(-RADIUS, RADIUS + 1)
    data = scale_offsets.pack(offsets)
    assert scale_offsets.unpack(data, len(offsets), "x").tolist() == offsets.tolist()
    for bad in (data[:-4], data + b"\0\0\0\0", b"\xff" * len(data)):
        with pytest.raises(nc.NCError, match="scale offsets"):
            scale_offsets.unpack(bad, len(offsets), "x")


def test_the_step_field_says_whether_offsets_follow():
    assert scale_offsets.split_step(128 | scale_offsets.FLAG) == (128, True)
    assert scale_offsets.split_step(128) == (128, False)
    assert scale_offsets.split_flags(0x8000 | scale_offsets.FLAG | 7) == (7, True, True)
    assert scale_offsets.split_flags(0x8000 | 7) == (7, True, False)
