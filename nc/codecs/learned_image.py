"""What the learned image codecs (image/hvae, image/vqgan) share: the codec shell (one weights file,
modes L and RGB, a quality or a bpp target), cutting an image into tiles, padding a tile to the
network's grid, grey as RGB and back, and running a float network on one thread so its pixels do not
depend on the thread count."""
from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, RatePoint, RateRange, check_effort
from nc.errors import CorruptChunkError, PluginError, UsageError
from nc.media.facts import ImageFacts

BPP = RateRange("bpp", 0.01, 8)  # a target for the payload; the container adds a few hundred bytes


class LearnedImageCodec(Codec):
    """Subclasses name the codec, its quality range and the classes that load the weights
    (`model_class(path)`) and code (`encoder_class(model, facts, rate)`, `decoder_class(model, facts)`)."""

    codec_id = ""
    bitstream_version = 1  # the track header's codec_version: raised when the payload changes
    quality: RateRange
    model_class: type
    encoder_class: type[Encoder]
    decoder_class: type[Decoder]
    efforts = 0  # the highest --effort; encoder_class takes `effort` when above 0

    def __init__(self, weights: Path, summary: str, default: RatePoint, rank: int):
        from nc.models.weights import sha256_of

        if not Path(weights).is_file():
            raise PluginError(f"{self.codec_id} has no weights at {weights}")
        self.weights = weights
        self.descriptor = CodecDescriptor(
            id=self.codec_id, version=self.bitstream_version, modality="image", summary=summary,
            ranges=(self.quality, BPP),
            default=default, streaming=False, deterministic=True, weights_sha256=sha256_of(weights), rank=rank,
            efforts=self.efforts)

    @cached_property
    def model(self):
        return self.model_class(self.weights)

    def check(self, facts) -> None:
        super().check(facts)
        if facts.mode not in ("L", "RGB"):
            raise UsageError(f"{self.codec_id} codes modes L and RGB, not {facts.mode} (its alpha would be lost: "
                             "drop it, or use image/webp, whose alpha is exact, or image/avif)")

    def encoder(self, facts: ImageFacts, rate: RatePoint, effort: int = 0) -> Encoder:
        self.check(facts)
        check_effort(self.descriptor, effort)
        if rate.unit not in ("quality", "bpp"):
            q = self.quality
            raise UsageError(f"{self.codec_id} takes a quality ({q.low:g}-{q.high:g}) or a bpp target, not {rate.unit}")
        return self.encoder_class(self.model, facts, rate, **({"effort": effort} if effort else {}))

    def decoder(self, facts: ImageFacts, rate: RatePoint, params: dict) -> Decoder:
        self.check(facts)
        return self.decoder_class(self.model, facts)


def load_network(path: Path, config_class, model_class, codec_id: str):
    """(network in eval mode, its config, the weights' other tensors) from a weights file; PluginError
    for a file that is not this codec's (no config, another config's tensors)."""
    from nc.models.weights import load_weights

    state, extra, meta = load_weights(path)
    try:
        cfg = config_class(**meta["config"])
        net = model_class(cfg)
        net.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise PluginError(f"{path}: not {codec_id} weights ({str(e).splitlines()[0]})") from None
    return net.eval(), cfg, extra


def take_block(data: bytes, pos: int, codec_id: str) -> tuple[bytes, int]:
    """A tile's u32-length-prefixed block at `pos` of a payload, and the position after it."""
    if pos + 4 > len(data):
        raise CorruptChunkError(f"{codec_id} payload ends inside a tile header")
    n = int.from_bytes(data[pos:pos + 4], "little")
    if pos + 4 + n > len(data):
        raise CorruptChunkError(f"{codec_id} tile is longer than the payload holds")
    return data[pos + 4:pos + 4 + n], pos + 4 + n


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, 1) grey -> (h, w, 3); RGB unchanged."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def as_mode(rgb: np.ndarray, channels: int) -> np.ndarray:
    """Decoded (h, w, 3) -> the file's mode: for grey, the mean of the channels rounded half to even."""
    if channels == 1:
        return np.round(rgb.astype(np.float32).mean(2, keepdims=True)).astype(np.uint8)
    return rgb


def tiles(height: int, width: int, tile: int):
    """(top, left, h, w) of each tile of side `tile` in raster order (the last row and column smaller)."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(tile, height - top), min(tile, width - left)


def even_tiles(height: int, width: int, tile: int, grid: int):
    """(top, left, h, w) in raster order of the fewest tiles of at most `tile` pixels a side, as equal
    as the network's `grid` allows: a side of n grid cells in k tiles gives n // k or n // k + 1 cells
    each (the last tile is cropped to the image). No sliver of a tile at the right or bottom edge,
    whose normalization statistics would come from a few padded pixels."""
    rows, cols = _even_splits(height, tile, grid), _even_splits(width, tile, grid)
    for top, h in rows:
        for left, w in cols:
            yield top, left, h, w


def _even_splits(side: int, tile: int, grid: int) -> list[tuple[int, int]]:
    cells, per_tile = -(-side // grid), tile // grid
    k = -(-cells // per_tile)
    sizes = [cells // k + (i < cells % k) for i in range(k)]
    starts = np.cumsum([0] + sizes[:-1]) * grid
    return [(int(s), int(min(n * grid, side - s))) for s, n in zip(starts, sizes)]


def pad_to(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """(h, w, c) padded at the bottom and right, edge pixels repeated, to multiples of `multiple`."""
    h, w = pixels.shape[:2]
    return np.pad(pixels, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")


@contextmanager
def one_thread(torch):
    """Run a float synthesis on one thread: oneDNN splits a convolution's sums differently for other
    thread counts, which moved some pixels by one level between 1 and 2 threads.

    torch's thread count is process-wide: another thread that starts using torch meanwhile takes 1 as
    its count (nc's own video decoders read the caller's count when they are made, outside this)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
