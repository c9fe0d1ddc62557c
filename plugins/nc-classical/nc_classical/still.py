"""image/jpeg, image/webp, image/avif: still images through Pillow.

The payload of the single Packet (start 0, duration 1) is the complete file
Pillow writes (JFIF / RIFF WebP / ISOBMFF AVIF), so it can be cut out of the
container and opened by any viewer.

Rates: "quality" is Pillow's quality (1..100, higher is better). "bpp" asks for
a size: Pillow's quality is binary-searched for the largest quality whose file
fits in bpp * width * height / 8 bytes; if even quality 1 does not fit, the
quality-1 file is used (the closest achievable). At effort 0, encoder options are Pillow's
defaults apart from quality (JPEG: baseline, 4:2:0 chroma subsampling; WebP:
lossy, method 4, lossless alpha; AVIF: speed 6, 4:2:0, alpha coded lossily like
the colour, exact only at quality 100). WebP holds sides up to 16383 pixels.
`--effort 1` asks each encoder to work harder (EFFORT_OPTIONS): JPEG with optimized
Huffman tables (the same pixels, a smaller file), WebP method 6, AVIF speed 2.
"""
from __future__ import annotations

import io

import numpy as np

from nc.codecs.base import (Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint, RateRange, check_effort,
                            checked_image)
from nc.errors import CorruptChunkError, UsageError
from nc.media.facts import ImageFacts
from nc.media.files import pillow_within_image_facts

QUALITY = RateRange("quality", 1, 100)
BPP = RateRange("bpp", 0.01, 24)
#: Pillow's save options at each --effort (0: Pillow's defaults, which the benchmarks' anchors use)
EFFORT_OPTIONS = {"JPEG": ({}, {"optimize": True}), "WEBP": ({}, {"method": 6}), "AVIF": ({}, {"speed": 2})}


def _descriptor(name: str, default_q: int, summary: str, rank: int) -> CodecDescriptor:
    """Rank orders the defaults by efficiency: AVIF, then WebP, then JPEG."""
    return CodecDescriptor(
        id=f"image/{name}",
        version=1,
        modality="image",
        summary=summary,
        ranges=(QUALITY, BPP),
        default=RatePoint(f"q{default_q}", float(default_q), "quality"),
        streaming=True,
        deterministic=True,
        weights_sha256="",
        rank=rank,
        efforts=1,
    )


class _StillCodec(Codec):
    """One Pillow format; subclasses set the descriptor and the Pillow format name."""

    pillow_format: str
    modes = ("L", "RGB", "RGBA")

    def check(self, facts) -> None:
        super().check(facts)
        if facts.mode not in self.modes:
            raise UsageError(f"{self.descriptor.id} encodes modes {', '.join(self.modes)}, not {facts.mode}"
                             + (" (JPEG has no alpha: convert to RGB, or use image/webp, whose alpha is "
                                "exact, or image/avif)"
                                if facts.mode == "RGBA" else ""))

    def encoder(self, facts: ImageFacts, rate: RatePoint, effort: int = 0) -> Encoder:
        self.check(facts)
        if rate.unit not in ("quality", "bpp"):
            raise UsageError(f"{self.descriptor.id} takes a quality or a bpp target, not {rate.unit}")
        check_effort(self.descriptor, effort)
        return StillEncoder(self.pillow_format, facts, rate, EFFORT_OPTIONS[self.pillow_format][effort])

    def decoder(self, facts: ImageFacts, rate: RatePoint, params: dict) -> Decoder:
        self.check(facts)
        return StillDecoder(self.pillow_format, facts)


class JpegCodec(_StillCodec):
    pillow_format = "JPEG"
    modes = ("L", "RGB")
    descriptor = _descriptor("jpeg", 75, "JPEG (Pillow/libjpeg), baseline, 4:2:0 chroma; modes L and RGB", 10)


class WebpCodec(_StillCodec):
    pillow_format = "WEBP"
    descriptor = _descriptor("webp", 75, "WebP lossy (Pillow/libwebp), method 4; modes L, RGB, RGBA (alpha lossless)", 11)
    MAX_SIDE = 16383  # libwebp's

    def check(self, facts) -> None:
        super().check(facts)
        if max(facts.width, facts.height) > self.MAX_SIDE:
            raise UsageError(f"image/webp holds sides up to {self.MAX_SIDE} pixels, not {facts.width}x{facts.height}: "
                             f"use image/avif or image/jpeg")


class AvifCodec(_StillCodec):
    pillow_format = "AVIF"
    descriptor = _descriptor("avif", 60, "AVIF (Pillow/libavif), speed 6, 4:2:0; modes L, RGB, RGBA (alpha lossy "
                                         "below quality 100)", 12)


def _to_pillow(pixels: np.ndarray, mode: str):
    from PIL import Image

    arr = pixels[:, :, 0] if mode == "L" else pixels
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))


def _save(image, pillow_format: str, quality: int, options: dict | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=pillow_format, quality=int(quality), **(options or {}))
    return buf.getvalue()


def encode_for_size(image, pillow_format: str, max_bytes: float, options: dict | None = None) -> bytes:
    """Largest quality whose file fits max_bytes; quality 1 if none does. ~7 encodes."""
    lo, hi = 1, 100
    best = _save(image, pillow_format, 1, options)
    if len(best) > max_bytes:
        return best
    while lo < hi:  # invariant: quality lo fits
        mid = (lo + hi + 1) // 2
        data = _save(image, pillow_format, mid, options)
        if len(data) <= max_bytes:
            lo, best = mid, data
        else:
            hi = mid - 1
    return best


class StillEncoder(Encoder):
    def __init__(self, pillow_format: str, facts: ImageFacts, rate: RatePoint, options: dict | None = None):
        self.format, self.facts, self.rate, self.options = pillow_format, facts, rate, options or {}
        self.params = {}
        self.done = False

    def encode(self, block: np.ndarray) -> list[Packet]:
        f = self.facts
        if self.done:
            raise UsageError(f"{self.format} encodes one image per track; it was already given")
        block = checked_image(block, f)
        self.done = True
        image = _to_pillow(block, f.mode)
        if self.rate.unit == "bpp":
            data = encode_for_size(image, self.format, self.rate.value * f.width * f.height / 8, self.options)
        else:
            data = _save(image, self.format, round(self.rate.value), self.options)
        return [Packet(data, start=0, duration=1, keyframe=True)]

    def flush(self) -> list[Packet]:
        return []


class StillDecoder(Decoder):
    def __init__(self, pillow_format: str, facts: ImageFacts):
        self.format, self.facts = pillow_format, facts

    def decode(self, packet: Packet) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        f = self.facts
        try:
            with pillow_within_image_facts(), Image.open(io.BytesIO(packet.payload), formats=[self.format]) as image:
                if image.size != (f.width, f.height):  # checked before any pixel memory is allocated
                    raise CorruptChunkError(f"{self.format} image is {image.size[0]}x{image.size[1]}, "
                                            f"the track says {f.width}x{f.height}")
                image.load()
                pixels = np.asarray(image.convert(f.mode))
        except UnidentifiedImageError:  # (its message names the BytesIO object)
            raise CorruptChunkError(f"{self.format} image does not decode: not a {self.format} payload") from None
        except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises on damaged files
            raise CorruptChunkError(f"{self.format} image does not decode: {e}") from None
        return pixels[:, :, None] if pixels.ndim == 2 else pixels
