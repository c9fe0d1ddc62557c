"""The Wiener post-filter (nc/codecs/postfilter.py): its integer arithmetic, its bytes, and the
encoder's choice of it."""
import numpy as np
import pytest

from nc.codecs import postfilter
from nc.codecs.postfilter import PostFilter, choose, taps, unpack
from nc.errors import CorruptChunkError


def _image(h=48, w=64, channels=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(h, w, channels)), 0), 1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 200 + 20
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def _blurred(x: np.ndarray) -> np.ndarray:
    """What a weak decoder gives: a box blur, darkened and tinted."""
    p = np.pad(x.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = sum(p[1 + dy:1 + dy + x.shape[0], 1 + dx:1 + dx + x.shape[1]] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return np.clip(0.9 * blur + np.arange(x.shape[2]) * 3, 0, 255).round().astype(np.uint8)


def _reference_classes(pixels: np.ndarray) -> np.ndarray:
    """The module docstring's classes, pixel by pixel in Python integers."""
    h, w, channels = pixels.shape

    def s(y, x):
        y, x = min(h - 1, max(0, y)), min(w - 1, max(0, x))
        return sum(int(v) for v in pixels[y, x]) * (3 if channels == 1 else 1)

    def a(y, x):
        return abs(2 * s(y, x) - s(y, x - 1) - s(y, x + 1)) + abs(2 * s(y, x) - s(y - 1, x) - s(y + 1, x))

    return np.array([[sum(t <= sum(a(y + dy, x + dx) for dy in range(-2, 3) for dx in range(-2, 3))
                          for t in postfilter.CLASS_THRESHOLDS) for x in range(w)] for y in range(h)])


def _reference(f: PostFilter, pixels: np.ndarray) -> np.ndarray:
    """The formula of the module docstring, pixel by pixel in Python integers."""
    h, w, channels = pixels.shape
    p = pixels.astype(object)
    of_class = np.minimum(_reference_classes(pixels), f.classes - 1)
    out = np.empty_like(pixels)
    for y in range(h):
        for x in range(w):
            weights = f.weights[of_class[y, x]]
            for c in range(channels):
                acc, i = 0, 0
                for k in range(channels):
                    for dy, dx in taps(f.radius):
                        v = p[min(h - 1, max(0, y + dy)), min(w - 1, max(0, x + dx)), k]
                        acc += int(weights[c, i]) * (v - 128 if (dy, dx) == (0, 0) else v - p[y, x, k])
                        i += 1
                acc += int(weights[c, i]) + (1 << (f.shift - 1))
                out[y, x, c] = min(255, max(0, p[y, x, c] + (acc >> f.shift)))
    return out


def test_taps_are_the_diamond_in_raster_order():
    assert taps(0) == [(0, 0)]
    assert taps(1) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    assert [len(taps(r)) for r in range(4)] == [1, 5, 13, 25]


@pytest.mark.parametrize("radius,channels,classes", [(1, 3, 1), (2, 1, 1), (3, 3, 1), (2, 3, 6), (1, 1, 3)])
def test_apply_is_the_documented_integer_formula(radius, channels, classes, monkeypatch):
    monkeypatch.setattr(postfilter, "STRIP_PIXELS", 40)  # strips of 2 rows: the halo crosses them
    rng = np.random.default_rng(radius)
    x = _image(9, 13, channels, seed=radius)
    if classes > 1:  # bands of noise from none to loud: every class
        amplitude = np.repeat([0, 1, 2, 4, 8, 40], 4)[None, :, None]
        x = np.clip(128 + amplitude * rng.standard_normal((10, 24, channels)), 0, 255).astype(np.uint8)
    weights = rng.integers(-300, 300, (classes, channels, channels * len(taps(radius)) + 1)).astype(np.int32)
    f = PostFilter(radius, 8, weights)
    assert len(np.unique(np.minimum(_reference_classes(x), classes - 1))) == classes  # each class is used
    np.testing.assert_array_equal(f.apply(x), _reference(f, x))


def test_the_largest_coefficients_do_not_overflow():
    x = np.zeros((7, 7, 3), np.uint8)
    x[::2, ::2] = 255  # every difference +-255, every centre +127 or -128
    n = 3 * len(taps(3)) + 1
    for sign in (1, -1):
        f = PostFilter(3, 14, np.full((3, n), sign * (postfilter.MAX_COEFFICIENT - 1), np.int32))
        np.testing.assert_array_equal(f.apply(x), _reference(f, x))


def test_pack_and_unpack_round_trip():
    weights = np.array([[5, -3, 0, 700, -40000, 12]], np.int32)
    f = PostFilter(1, 9, weights)
    data = b"head" + f.pack() + b"tail"
    g, end = unpack(data, 4, 1)
    assert (g.radius, g.shift, g.classes) == (1, 9, 1) and data[end:] == b"tail"
    np.testing.assert_array_equal(g.weights[0], weights)
    classed = PostFilter(2, 7, np.arange(4 * 3 * 40).reshape(4, 3, 40).astype(np.int32) - 200)
    assert classed.pack()[0] == 2 + 16 * 3  # the radius, and the classes less one in the high nibble
    g, end = unpack(classed.pack(), 0, 3)
    assert (g.radius, g.shift, g.classes, end) == (2, 7, 4, len(classed.pack()))
    np.testing.assert_array_equal(g.weights, classed.weights)


def test_damaged_filters_are_corrupt_chunks():
    data = PostFilter(1, 9, np.array([[5, -3, 0, 7, 1, 12]], np.int32)).pack()
    for bad in (data[:5], data[:-1], b"\x04" + data[1:], b"\x61" + data[1:], data[:1] + b"\x00" + data[2:],
                data[:2] + b"\x40" + data[3:]):  # radius 4, 7 classes, shift 0, scale 64
        with pytest.raises(CorruptChunkError):
            unpack(bad, 0, 1)
    for huge in (postfilter.MAX_COEFFICIENT, -postfilter.MAX_COEFFICIENT, -2**31):  # |-2^31| is -2^31 in int32
        data = PostFilter(0, 9, np.array([[huge, 0]], np.int32)).pack()
        with pytest.raises(CorruptChunkError, match="coefficient"):
            unpack(data, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_chosen_filter_brings_a_blurred_image_closer(channels):
    x = _image(64, 96, channels)
    y = _blurred(x)
    f = choose(y, x, lmbda=0.05)
    assert f is not None
    before, after = (float(np.mean((x.astype(float) - z) ** 2)) for z in (y, f.apply(y)))
    assert after < 0.7 * before


def test_classes_are_chosen_where_parts_of_the_image_want_other_corrections():
    """A smooth half blurred beside a noisy half decoded exactly: one filter cannot both sharpen the one
    and leave the other, a filter of classes by activity can, and is chosen where it pays for its bytes."""
    x = _image(64, 128)
    x[:, 64:] = np.clip(x[:, 64:] + np.random.default_rng(0).normal(0, 25, x[:, 64:].shape), 0, 255)
    y = _blurred(x)
    y[:, 64:] = x[:, 64:]
    one, classed = choose(y, x, lmbda=0.05), choose(y, x, lmbda=0.05, max_classes=postfilter.MAX_CLASSES)
    assert one.classes == 1 and classed.classes > 1
    error = lambda f: float(np.mean((f.apply(y) - x.astype(float)) ** 2))  # noqa: E731
    assert error(classed) < 0.8 * error(one)


def test_no_filter_where_it_cannot_pay_for_its_bytes():
    x = _image()
    assert choose(x, x, lmbda=0.05) is None  # nothing to correct
    assert choose(_blurred(x), x, lmbda=1e-9) is None  # bits matter, error does not


def test_the_statistics_do_not_depend_on_the_strips(monkeypatch):
    x = _image(40, 50)
    whole = choose(_blurred(x), x, lmbda=0.05)
    monkeypatch.setattr(postfilter, "STRIP_PIXELS", 120)  # strips of 2 rows
    strips = choose(_blurred(x), x, lmbda=0.05)
    assert (strips.radius, strips.shift) == (whole.radius, whole.shift)
    np.testing.assert_allclose(strips.weights, whole.weights, atol=1)


def test_one_filter_for_several_frames_filters_each_on_its_own():
    frames = np.stack([_image(seed=s) for s in range(3)])
    blurred = np.stack([_blurred(f) for f in frames])
    f = choose(blurred, frames, lmbda=0.05)
    np.testing.assert_array_equal(f.apply(blurred), np.stack([f.apply(b) for b in blurred]))
    assert np.mean((f.apply(blurred) - frames.astype(float)) ** 2) < 0.7 * np.mean((blurred - frames.astype(float)) ** 2)


def test_a_target_keeps_the_filter_only_where_it_fits():
    from nc.codecs.learned_video import filtered_within

    search = lambda budget: bytes(int(budget) // 10 * 10)  # noqa: E731  payload sizes step by 10 bytes
    with_filter = lambda extra: lambda p: p + b"F" * extra  # noqa: E731
    assert filtered_within(search, 505, with_filter(5)) == bytes(500) + b"F" * 5  # it fits at once
    assert filtered_within(search, 500, with_filter(30)) == bytes(470) + b"F" * 30  # a lower step and its filter
    assert filtered_within(search, 500, lambda p: p) == bytes(500)  # no filter pays: the search's own
    grows = lambda p: p + b"F" * (30 if len(p) == 500 else 45)  # noqa: E731  it outgrows the share set aside
    assert filtered_within(search, 505, grows) == bytes(500)  # unfiltered, the largest that fits
    stops = lambda p: p + b"F" * 30 if len(p) == 500 else p  # noqa: E731  it no longer pays at the lower step
    assert filtered_within(search, 505, stops) == bytes(500)


def test_large_inputs_are_fitted_on_a_sample_spread_over_them(monkeypatch):
    monkeypatch.setattr(postfilter, "SAMPLE_PIXELS", 4 * 100 * 80)
    strips = postfilter._sample((32, 100, 80, 3))  # 32 frames of 8000 pixels: every 8th frame
    frames = sorted({i for i, _, _ in strips})
    assert len(frames) == 4 and {i % 4 for i in frames} == {0, 1, 2, 3}  # every place in a group of 4
    assert all(b - t == 100 for _, t, b in strips)  # whole frames
    monkeypatch.setattr(postfilter, "STRIP_PIXELS", 800)  # strips of 10 rows
    strips = postfilter._sample((1, 1000, 80, 3))  # one image of 80,000 pixels: every 3rd strip
    assert [t for _, t, _ in strips] == list(range(0, 1000, 30))


@pytest.mark.parametrize("radius, channels, classes", [(0, 3, 1), (2, 3, 1), (3, 1, 1), (2, 3, 6)])
def test_the_float_twin_is_the_filter_without_its_rounding(radius, channels, classes):
    import torch

    rng = np.random.default_rng(radius)
    weights = rng.integers(-60, 60, (classes, channels, channels * len(taps(radius)) + 1)).astype(np.int32)
    fitted = PostFilter(radius, 9, weights)
    x = rng.integers(0, 256, (20, 24, channels)).astype(np.uint8)
    exact = fitted.apply(x).astype(np.float64)
    twin = fitted.as_convolution()(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)
    twin = twin[0].permute(1, 2, 0).double().numpy() * 255
    unclamped = (exact > 0) & (exact < 255)
    assert unclamped.mean() > 0.5
    assert np.abs(twin - exact)[unclamped].max() <= 0.5 + 1e-3  # floor((acc + 2^(S-1)) / 2^S) rounds
