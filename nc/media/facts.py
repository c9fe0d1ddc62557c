"""Media facts: what a track must remember to give back media of the input's exact shape.

Stored as JSON in the track header (see docs/FORMAT.md). Every field read from a
file is range-checked here, before anything is allocated from it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from nc.errors import FormatError

MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
MAX_SIDE = 32_768  # pixels, per image or video side
MAX_IMAGE_PIXELS = 1 << 28  # 16384 x 16384
MAX_FRAME_PIXELS = 1 << 25  # a little over 8K UHD
IMAGE_MODES = {"L": 1, "RGB": 3, "RGBA": 4}
MAX_SAR_TERM = 65_535  # H.264's and H.265's aspect_ratio_idc terms are 16-bit
SQUARE = {"sar_num": 1, "sar_den": 1}  # video facts' optional keys, written only when they differ

#: sound beyond full scale by more than this (+0.5 dBFS) is warned of when encoded and when a file clips it;
#: a lossy decoder's overshoot on loud sound stays below it
LOUD_PEAK = 10 ** (0.5 / 20)


@dataclass(frozen=True)
class AudioFacts:
    sample_rate: int
    channels: int
    modality = "audio"

    def validate(self) -> "AudioFacts":
        _check(1 <= self.sample_rate <= MAX_SAMPLE_RATE, f"sample rate {self.sample_rate}")
        _check(1 <= self.channels <= MAX_CHANNELS, f"channel count {self.channels}")
        return self

    def seconds(self, samples: int) -> float:
        return samples / self.sample_rate


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    mode: str  # "L", "RGB" or "RGBA"
    modality = "image"

    @property
    def channels(self) -> int:
        return IMAGE_MODES[self.mode]

    def validate(self) -> "ImageFacts":
        _check(1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE
               and self.width * self.height <= MAX_IMAGE_PIXELS, f"image size {self.width}x{self.height}")
        _check(self.mode in IMAGE_MODES, f"image mode {self.mode!r}")
        return self

    def seconds(self, frames: int) -> float:
        return 0.0


@dataclass(frozen=True)
class VideoFacts:
    width: int
    height: int
    fps_num: int
    fps_den: int
    # the pixels' shape (width / height) as the source's player shows them: 1:1 but on anamorphic
    # video (DVD, broadcast), whose frames are stretched to the display aspect
    sar_num: int = 1
    sar_den: int = 1
    modality = "video"

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def sar(self) -> Fraction:
        return Fraction(self.sar_num, self.sar_den)

    def validate(self) -> "VideoFacts":
        _check(1 <= self.width <= MAX_SIDE and 1 <= self.height <= MAX_SIDE
               and self.width * self.height <= MAX_FRAME_PIXELS, f"video size {self.width}x{self.height}")
        _check(1 <= self.fps_num <= 1_000_000 and 1 <= self.fps_den <= 1_000_000, f"frame rate {self.fps_num}/{self.fps_den}")
        _check(self.fps_num / self.fps_den <= 1000, f"frame rate {self.fps_num}/{self.fps_den}")
        _check(1 <= self.sar_num <= MAX_SAR_TERM and 1 <= self.sar_den <= MAX_SAR_TERM
               and math.gcd(self.sar_num, self.sar_den) == 1,  # in lowest terms: one way to say each
               f"sample aspect ratio {self.sar_num}:{self.sar_den}")
        return self

    def seconds(self, frames: int) -> float:
        return float(frames / self.fps)


MediaFacts = AudioFacts | ImageFacts | VideoFacts
_BY_MODALITY = {"audio": AudioFacts, "image": ImageFacts, "video": VideoFacts}


def facts_to_json(facts: MediaFacts) -> dict:
    """The track header's `facts`; square pixels go unsaid, so files written before nc kept the
    sample aspect ratio read the same, and theirs read as square."""
    fields = asdict(facts)
    if isinstance(facts, VideoFacts) and facts.sar == 1:
        fields = {k: v for k, v in fields.items() if k not in SQUARE}
    return {"modality": facts.modality, **fields}


def facts_from_json(d: dict) -> MediaFacts:
    """Parse and validate facts read from a file; raises FormatError on anything odd."""
    try:
        cls = _BY_MODALITY[d["modality"]]
        optional = SQUARE if cls is VideoFacts else {}
        fields = {k: d.get(k, optional[k]) if k in optional else d[k] for k in cls.__dataclass_fields__}
        for k, v in fields.items():
            want = str if k == "mode" else int
            if type(v) is not want:
                raise TypeError(k)
        return cls(**fields).validate()
    except (KeyError, TypeError) as e:
        raise FormatError(f"track media facts are incomplete or mistyped ({e})") from None


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise FormatError(f"{what} is out of the supported range")
