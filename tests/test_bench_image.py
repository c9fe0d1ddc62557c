"""bench/image.py's pieces on generated data: which points a codec is measured at, one photo through
nc's container, the crop finder and the fixed-bpp interpolation. The full run is `python bench/image.py`."""
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from nc.codecs.base import CodecDescriptor, RatePoint
from nc.plugins import registry

BENCH = Path(__file__).resolve().parent.parent / "bench" / "image.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_image", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_rate_points(bench):
    jpeg = registry().get("image/jpeg").descriptor
    points = bench.rate_points(jpeg)
    assert [label for label, _ in points] == [f"q{q}" for q in bench.QUALITY_SWEEPS["image/jpeg"]]
    assert points[0][1] == {"quality": 2}
    neural = CodecDescriptor(id="image/fake", version=1, modality="image", summary="declared points",
                             points=(RatePoint("0.25bpp", 0.25, "bpp"), RatePoint("q3", 3, "quality")))
    assert bench.rate_points(neural) == [("0.25bpp", {"bitrate": "0.25bpp"}), ("q3", {"quality": 3})]


def test_one_photo_through_the_container(bench):
    yy, xx = np.mgrid[0:192, 0:256]
    x = np.stack([128 + 60 * np.sin(xx / (5.0 + c)) * np.cos(yy / 9.0) for c in range(3)], -1).astype(np.uint8)
    row, y = bench.run_one("image/jpeg", {"quality": 80}, x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert 0 < row["container_bytes"] < 1000
    assert row["bpp"] > row["container_bytes"] * 8 / x[..., 0].size  # payload and container both counted
    assert row["psnr"] > 30 and 0.9 < row["ms_ssim"] < 1


def test_busiest_window_and_fixed_bpp(bench):
    x = np.full((300, 400, 3), 90, np.uint8)
    x[40:100, 200:260] = np.random.default_rng(0).integers(0, 255, (60, 60, 3))  # the only detail
    top, left = bench.busiest_window(x, size=96, step=8)
    assert top <= 40 and top + 96 >= 100 and left <= 200 and left + 96 >= 260
    points = [{"bpp": 0.2, "psnr": 30.0}, {"bpp": 0.8, "psnr": 36.0}]
    assert bench.at_bpp(points, "psnr", 0.4) == pytest.approx(33.0)  # halfway in log bpp
    assert np.isnan(bench.at_bpp(points, "psnr", 1.0))


def test_classical_codecs_at_the_low_rate_codecs_sizes(bench):
    yy, xx = np.mgrid[0:192, 0:256]
    x = np.stack([128 + 60 * np.sin(xx / (5.0 + c)) * np.cos(yy / 9.0) for c in range(3)], -1).astype(np.uint8)
    ours, _ = bench.run_one("image/webp", {"quality": 60}, x)  # stands in for the low-rate codec's file
    table, crops = defaultdict(list), {"original": ({}, x[:8, :8])}
    bench.matched_size(x, ours, table, crops, np.s_[:8, :8])
    webp = table[("image/webp", "matched")][0]
    assert abs(webp["bpp"] - ours["bpp"]) < 0.02  # the same payload target finds (about) the same file
    assert ("image/jpeg", "matched") in crops and crops[("image/jpeg", "matched")][1].shape == (8, 8, 3)
    lines = bench.low_rate_section({bench.LOW_RATE[0]: [ours], "image/webp": [webp],
                                    "image/jpeg": table[("image/jpeg", "matched")]})
    assert any(line.startswith(f"| {bench.LOW_RATE[0]} q1 |") for line in lines)
    assert any(line.startswith("| image/webp |") and line.endswith("| 0 of 1 |") for line in lines)
    assert bench.low_rate_section({}) == []


def test_bd_table_reports_hvaes_trained_range_on_its_own(bench):
    def curve(offset, labels):
        return [{"label": lab, "bpp": b, "psnr": 25 + 10 * b + offset, "ms_ssim_db": 10 + 5 * b + offset}
                for lab, b in zip(labels, (0.2, 0.4, 0.6, 0.9, 1.3))]

    curves = {"image/jpeg": curve(0, ["q10", "q30", "q50", "q70", "q90"]),
              "image/hvae": curve(1, ["q0", "q0.5", "q1", "q2", "q3"])}
    rows = {line.split(" | ")[0][2:]: line for line in bench.bd_table(curves)[2:]}
    assert set(rows) == {"image/jpeg", "image/hvae", "image/hvae (q1-8, trained)"}
    assert "(28.0-" in rows["image/hvae"].split(" | ")[1]  # from q0's PSNR, the two curves' common floor
    assert "(32.0-" in rows["image/hvae (q1-8, trained)"].split(" | ")[1]  # from q1's
