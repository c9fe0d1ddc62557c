"""scripts/build_image_set.py on generated photos in a fake package tree: the 768x512 evaluation view,
training crops, the disjointness check, and a whole build. Needs no Debian package."""
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_image_set.py"


@pytest.fixture(scope="module")
def bis():
    spec = importlib.util.spec_from_file_location("build_image_set", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def _photo(width: int, height: int, tint: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """A textured RGB image whose mean colour is `tint`, so its pixels can be told apart from others'."""
    texture = (30 * np.sin(np.arange(width) / 7.0)[None, :] * np.cos(np.arange(height) / 11.0)[:, None])
    pixels = np.asarray(tint, np.float32) + texture[:, :, None].astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_eval_view_shrinks_to_cover_and_centre_crops(bis):
    pixels, info = bis.eval_view(_photo(2000, 1400))
    assert pixels.shape == (512, 768, 3) and pixels.dtype == np.uint8
    assert info["factor"] == pytest.approx(2000 / 768, abs=1e-4) and not info["rotated"]
    left, top, right, bottom = info["box"]
    assert (left, right) == pytest.approx((0, 2000), abs=0.01)  # the whole width, centred vertically
    assert top == pytest.approx(1400 - bottom, abs=0.01)


def test_eval_view_turns_portraits_and_caps_the_factor(bis):
    _, info = bis.eval_view(_photo(1100, 1700))
    assert info["rotated"] and info["factor"] == pytest.approx(min(1700 / 768, 1100 / 512), abs=1e-4)
    _, info = bis.eval_view(_photo(3200, 2100))
    assert info["factor"] == bis.MAX_FACTOR  # shrunk 4x and cropped, not 4.1x
    with pytest.raises(ValueError, match="too small"):
        bis.eval_view(_photo(1400, 1000))  # would need less than 2x


def test_shrink_box_equals_shrinking_then_cropping(bis):
    image = _photo(800, 600)
    whole = np.asarray(image.resize((400, 300), Image.Resampling.LANCZOS)).astype(int)
    part = bis.shrink_box(image, (200, 100, 712, 612 - 100), (256, 206)).astype(int)
    assert np.abs(part - whole[50:256, 100:356]).max() <= 1


def test_train_crop_is_random_but_reproducible(bis):
    image = _photo(1200, 700)
    crop, info = bis.train_crop(image, np.random.default_rng(3))
    again, _ = bis.train_crop(image, np.random.default_rng(3))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8 and np.array_equal(crop, again)
    for seed in range(20):
        _, info = bis.train_crop(image, np.random.default_rng(seed))
        x0, y0, x1, y1 = info["box"]
        assert bis.MIN_FACTOR <= info["factor"] <= 700 / 256  # capped where the photo is too short for 4x
        assert 0 <= x0 and x1 <= 1200 and 0 <= y0 and y1 <= 700
        assert x1 - x0 == pytest.approx(256 * info["factor"], abs=0.02)
    assert bis.can_train(512, 900) and not bis.can_train(511, 900)
    assert bis.train_weight(2560, 1600) == pytest.approx(15.625)


def test_check_disjoint(bis):
    ok = [{"split": "eval", "group": "a", "sha256": "1"}, {"split": "train", "group": "b", "sha256": "2"},
          {"split": "unused", "group": "a", "sha256": "2"}]
    bis.check_disjoint(ok)
    with pytest.raises(AssertionError, match="scene groups"):
        bis.check_disjoint(ok + [{"split": "train", "group": "a", "sha256": "3"}])
    with pytest.raises(AssertionError, match="same bytes"):
        bis.check_disjoint(ok + [{"split": "train", "group": "c", "sha256": "1"}])


RED, BLUE = (180, 60, 60), (60, 60, 180)


def _fake_tree(root: Path) -> None:
    """The flower and one wallpaper (held out, red), one wallpaper and one opencv photo (training, blue),
    one opencv photo too small for anything."""
    def put(rel: str, image: Image.Image) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)

    put("usr/share/libjxl-testdata/jxl/flower/flower.png", _photo(1600, 1100, RED))
    put("usr/share/wallpapers/EveningGlow/contents/images/1600x1040.jpg", _photo(1600, 1040, RED))
    put("usr/share/wallpapers/EveningGlow/contents/images/800x520.jpg", _photo(800, 520, BLUE))  # not the largest
    put("usr/share/wallpapers/Path/contents/images/1600x1000.jpg", _photo(1600, 1000, BLUE))
    put("usr/share/doc/opencv-doc/examples/data/apple.jpg", _photo(512, 512, BLUE))
    put("usr/share/doc/opencv-doc/examples/data/home.jpg", _photo(512, 384, RED))


def test_build_on_fake_tree(bis, tmp_path):
    root = tmp_path / "root"
    _fake_tree(root)
    manifest = bis.build(str(tmp_path / "out"), str(root), crops=6, seed=1, command="test")
    out = tmp_path / "out"
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"eval": 2, "train": 2, "unused": 1}
    assert manifest["missing"] == ["apt-get install -y --no-install-recommends mate-backgrounds"]
    assert "usr/share/wallpapers/Grey/contents/images" in manifest["absent"]  # its package is there, it is not
    files = {e["group"]: e for e in manifest["files"]}
    assert files["plasma/EveningGlow"]["path"].endswith("1600x1040.jpg")
    assert files["opencv/home"]["split"] == "unused"

    names = sorted(p.name for p in (out / "eval").glob("*.png"))
    assert names == ["libjxl__flower.png", "plasma__EveningGlow.png"]
    for name in names:
        pixels = np.asarray(Image.open(out / "eval" / name))
        assert pixels.shape == (512, 768, 3)
        assert pixels[..., 0].mean() > pixels[..., 2].mean() + 60  # red: only held-out photos went here
        entry = next(e for e in manifest["files"] if e.get("eval_image") == name)
        assert entry["processing"]["pixels_sha256"] == hashlib.sha256(pixels.tobytes()).hexdigest()

    train = np.load(out / "train_256.npy", allow_pickle=False)
    assert train.shape == (6, 256, 256, 3) and train.dtype == np.uint8
    assert (train[..., 2].mean(axis=(1, 2)) > train[..., 0].mean(axis=(1, 2)) + 60).all()  # all blue: training only
    assert {r["source"] for r in manifest["train_crops"]} <= {e["path"] for e in manifest["files"] if e["split"] == "train"}
    assert sum(e.get("train_crops", 0) for e in manifest["files"]) == 6

    bis.build(str(tmp_path / "again"), str(root), crops=6, seed=1)  # same seed, same bytes
    assert np.array_equal(np.load(tmp_path / "again" / "train_256.npy"), train)


def test_build_writes_whole_training_photos_at_three_scales(bis, tmp_path):
    root = tmp_path / "root"
    _fake_tree(root)
    manifest = bis.build(str(tmp_path / "out"), str(root), crops=2, seed=1, photos=True)
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out" / "train_photos").glob("*.png")}
    assert sizes == {"plasma__Path__1600x1000_x2.00.png": (800, 500), "plasma__Path__1600x1000_x2.83.png": (566, 354),
                     "opencv__apple__apple_x2.00.png": (256, 256)}  # the others are under 256 px: left out
    for name in sizes:  # blue: training photos only
        pixels = np.asarray(Image.open(tmp_path / "out" / "train_photos" / name))
        assert pixels[..., 2].mean() > pixels[..., 0].mean() + 60
    assert sum(len(e.get("train_photos", [])) for e in manifest["files"]) == 3
