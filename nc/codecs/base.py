"""What a codec is to nc: a descriptor plus a stateful encoder and decoder.

A codec never sees the container. Its encoder turns media blocks (any size) into
`Packet`s; nc writes each packet as one chunk of the `.ncb` file, with the
packet's start, duration and keyframe flag in the chunk header. Its decoder turns
packets back into media. Packets must be decodable without earlier packets'
*bytes* (entropy coders reset per packet); a decoder may still carry signal
state from packet to packet, in which case only keyframe packets are seek points.

Media arrays (numpy):
- audio: float32, shape (samples, channels), nominally in [-1, 1]
- image: uint8, shape (height, width, channels), channels 1 (L), 3 (RGB) or 4 (RGBA)
- video: uint8, shape (frames, height, width, 3), RGB
Encoders are given these; decoders must return them (audio of any float dtype is taken as
float32). A decoder that returns anything else stops decoding with a PluginError naming the codec.

Each packet costs 60 bytes in the file besides its payload (chunk framing 12, DATA header 20,
index entry 28): at 20 ms packets that is 24 kbps, so audio codecs pack seconds per packet
(audio/opus: 2 s; audio/rvq: 5 s; the test plugin, 4000 samples). Packets are also the seek points.

A codec changes its `version` when its payload changes. nc refuses a file whose version is newer
than the installed codec's; older files reach `decoder` as they are, so a codec that still reads
them tells the formats apart by its payload or by what its encoder stored in `Encoder.params`.

Plugins subclass `Codec`, `Encoder` and `Decoder` and register the codec through
the `nc_register_codecs` hook (see `nc.plugins.hookspecs`).
"""
from __future__ import annotations

import re
from types import MappingProxyType
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from nc.bitstream.container import CODEC_ID
from nc.errors import UsageError
from nc.media.facts import MediaFacts

MODALITIES = ("audio", "image", "video")


@dataclass(frozen=True)
class RatePoint:
    """One operating point: `value` in `unit` ("bps", "bpp" or "quality").

    `rank`, when set, replaces the codec's rank in choosing a default codec for a request that
    lands on this point: a point where the codec loses to what is usually installed ranks lower.
    It is a preference of this installation, not part of the file (`to_json` leaves it out).
    """

    name: str
    value: float
    unit: str
    rank: int | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit}

    @classmethod
    def from_json(cls, d: dict) -> "RatePoint":
        return cls(str(d["name"]), float(d["value"]), str(d["unit"]))


@dataclass(frozen=True)
class RateRange:
    """A continuous range of values a codec accepts in one unit."""

    unit: str
    low: float
    high: float


@dataclass(frozen=True)
class Packet:
    """One independently entropy-coded unit; becomes one chunk of the file.

    `start` and `duration` are in samples (audio) or frames (video; images use
    start 0, duration 1) at the track's own rate.
    """

    payload: bytes
    start: int
    duration: int
    keyframe: bool = True


@dataclass(frozen=True)
class CodecDescriptor:
    """Everything nc needs to know about a codec without loading it."""

    #: `audio/NAME`, `image/NAME` or `video/NAME`; stored in every file, so never renamed. Two plugins
    #: registering one id make nc use neither (and nc's own ids stay nc's)
    id: str
    #: the payload format's version, stored in every file (see the module docstring)
    version: int
    modality: str
    #: one line for `nc codecs`
    summary: str
    #: named operating points (`RatePoint("6k", 6000, "bps")`), and continuous ranges; at least one
    #: of the two. A codec with no rate to choose (lossless) offers one quality point, e.g. "q0"
    points: tuple[RatePoint, ...] = ()
    ranges: tuple[RateRange, ...] = ()
    #: the point used when the user gives no rate (None: the first point, or the middle of the range)
    default: RatePoint | None = None
    #: shown by `nc codecs`: the encoder emits packets as media comes in (not only at the end), and the
    #: same input gives the same bytes on any machine and thread count (a codec's claim, for effort 0;
    #: image/hvae's float analysis and refinement make it only for decoding). Nothing checks or relies on them
    streaming: bool = True
    deterministic: bool = True
    #: SHA-256 of the weights the encoder and decoder use ("" for none); a file encoded with other
    #: weights is refused (WeightsMismatchError), since its payload would decode to something else
    weights_sha256: str = ""
    #: preference when the user names no codec: the highest-ranked codec of the modality that offers
    #: the rate asked for wins. nc's audio codecs rank 30-50, nc-classical's 10-12, nc's image and
    #: video codecs 4-5, the test plugin -100; rank a codec below what it does not beat
    rank: int = 0
    #: not used by nc (kept so that plugins that pass it still load)
    extensions: tuple[str, ...] = ()
    #: seconds a seek starts decoding before its target, for decoders whose output depends on earlier
    #: packets (a convolutional decoder's left context); what they decode before the target is dropped
    preroll: float = 0.0
    #: the highest `--effort` the encoder takes (0: none). Effort trades encoding time for a better
    #: trade of bits against distortion (image/hvae: fewer bits at most qualities, a little less PSNR
    #: at low ones and more at high ones: the curve moves left); files decode the same way whatever
    #: the effort. nc calls `encoder(facts, rate, effort=n)` only for 1 <= n <= efforts (older
    #: plugins need not take it)
    efforts: int = 0

    def __post_init__(self):
        if not CODEC_ID.fullmatch(self.id):
            raise ValueError(f"codec id {self.id!r} must look like 'audio/name', 'image/name' or 'video/name'")
        if self.id.split("/")[0] != self.modality:
            raise ValueError(f"codec id {self.id!r} does not match modality {self.modality!r}")
        if not self.points and not self.ranges:
            raise ValueError(f"codec {self.id!r} declares no rate points or ranges")
        if isinstance(self.efforts, bool) or not isinstance(self.efforts, int) or self.efforts < 0:
            raise ValueError(f"codec {self.id!r}: efforts must be a whole number from 0, not {self.efforts!r}")

    def describe_rates(self) -> str:
        parts = [p.name for p in self.points]
        parts += [f"{_fmt(r.low, r.unit)}..{_fmt(r.high, r.unit)}" for r in self.ranges]
        return ", ".join(parts)

    def resolve(self, bitrate: str | float | None = None, quality: float | None = None) -> RatePoint:
        """Map a user's `--bitrate` / `--quality` request to a rate point of this codec."""
        if bitrate is not None and quality is not None:
            raise UsageError("give --bitrate or --quality, not both")
        if bitrate is None and quality is None:
            return self.default or (self.points[0] if self.points else _mid(self.ranges[0]))
        value, unit = (parse_rate(bitrate, self.modality) if bitrate is not None else (float(quality), "quality"))
        if not value > 0 and unit != "quality":
            raise UsageError(f"a rate must be positive, not {bitrate!r}")
        for r in self.ranges:
            if r.unit == unit:
                if not r.low <= value <= r.high:
                    raise UsageError(f"{self.id} accepts {_fmt(r.low, unit)} to {_fmt(r.high, unit)}, not {_fmt(value, unit)}")
                return RatePoint(_fmt(value, unit), value, unit)
        same_unit = [p for p in self.points if p.unit == unit]
        if not same_unit:
            raise UsageError(f"{self.id} has no {unit} rate points; it offers {self.describe_rates()}")
        nearest = min(same_unit, key=lambda p: abs(np.log(max(p.value, 1e-9) / max(value, 1e-9))))
        if unit != "quality" and not 0.5 <= nearest.value / value <= 2:  # a request far off every point is a mistake
            raise UsageError(f"{self.id} offers {self.describe_rates()}; {_fmt(value, unit)} is not near any of them")
        return nearest


def is_near(point: RatePoint, value: float) -> bool:
    """Whether a rate asked for is this point (within 10 %), not merely the nearest one."""
    return 0.9 <= point.value / value <= 1.1


def _mid(r: RateRange) -> RatePoint:
    v = (r.low * r.high) ** 0.5 if r.unit != "quality" else (r.low + r.high) / 2
    return RatePoint(_fmt(v, r.unit), v, r.unit)


def _fmt(value: float, unit: str) -> str:
    if unit == "bps":
        return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"
    if unit == "bpp":
        return f"{value:g}bpp"
    return f"q{value:g}"


_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(k|m)?\s*(bps|bpp|b/s)?\s*$", re.IGNORECASE)


MIN_PLAIN_BPS = 100  # a unitless sound or video bitrate below this is taken for a forgotten "k"


def parse_rate(text: str | float, modality: str) -> tuple[float, str]:
    """'6k' -> (6000, 'bps'); '0.5bpp' -> (0.5, 'bpp'). Plain numbers are bps for audio/video, bpp for images."""
    if isinstance(text, (int, float)):
        value, plain, unit = float(text), True, ""
    else:
        m = _RATE.match(str(text).strip().lstrip("+"))
        if not m:
            raise UsageError(f"cannot read bitrate {text!r}: use e.g. 6k, 1.5kbps, 128000 or 0.5bpp")
        value = float(m.group(1)) * {None: 1, "k": 1e3, "m": 1e6}[(m.group(2) or "").lower() or None]
        plain, unit = not m.group(2), (m.group(3) or "").lower()
    if unit == "bpp" or (not unit and modality == "image" and plain):
        return value, "bpp"
    if not unit and plain and 0 < value < MIN_PLAIN_BPS:  # "0.5" or "6": kbit/s meant, or an image's bpp
        raise UsageError(f"a bitrate of {value:g} bit/s is far below any {modality} codec's: write {value:g}k for "
                         f"kbit/s (a bare number is bit/s for sound and video, bits per pixel for images)")
    return value, "bps"


def check_effort(descriptor: CodecDescriptor, effort: int) -> None:
    """UsageError for an effort outside 0..descriptor.efforts, for an encoder called directly (nc
    itself only passes efforts the descriptor offers)."""
    if not 0 <= effort <= descriptor.efforts:
        raise UsageError(f"{descriptor.id} takes an effort of 0-{descriptor.efforts}, not {effort}")


def checked_image(block, facts) -> np.ndarray:
    """An image encoder's input as uint8 (height, width, channels) of the track's facts (a 2-D array
    for one channel is accepted); UsageError for anything else."""
    block = np.asarray(block)
    if block.ndim == 2 and facts.channels == 1:
        block = block[:, :, None]
    if block.shape != (facts.height, facts.width, facts.channels) or block.dtype != np.uint8:
        raise UsageError(f"expected a uint8 image of shape {(facts.height, facts.width, facts.channels)}, "
                         f"got {block.dtype} {block.shape}")
    return block


class Encoder(ABC):
    """Stateful: `encode` accepts blocks of any size, `flush` ends the stream."""

    #: JSON-able parameters the decoder needs; stored in the track header, so
    #: they must be final before the first packet. Assign a dict per instance.
    params: dict = MappingProxyType({})

    @abstractmethod
    def encode(self, block: np.ndarray) -> Iterable[Packet]:
        """Consume a block of media; return the packets that are complete."""

    @abstractmethod
    def flush(self) -> Iterable[Packet]:
        """Return the remaining packets. The encoder is finished afterwards."""


class Decoder(ABC):
    """Turns packets back into media.

    Alignment contract: a new decoder, or one just reset, starts its output at
    the `start` of the next packet it decodes. Output may lag behind the
    packets (a resampler's lookahead); `flush` returns what is held back. nc
    trims each track to the exact length recorded in the file. Raise any
    exception for a payload that cannot be decoded: nc reports it with the
    chunk's number.
    """

    @abstractmethod
    def decode(self, packet: Packet) -> np.ndarray:
        """Media for this packet (possibly lagging; see the class docstring)."""

    def flush(self) -> np.ndarray | None:
        """Media still held back. Called at the end of the stream and before a reset, also after
        `decode` raised: then it returns only the output of the packets decoded before."""
        return None

    def reset(self) -> None:
        """Forget carried state: the next packet follows a seek or a lost chunk."""


class Codec(ABC):
    """A codec plugin. Construction must be cheap: load weights lazily."""

    descriptor: CodecDescriptor

    def check(self, facts: MediaFacts) -> None:
        """Raise UsageError if this codec cannot encode media with these facts."""
        if facts.modality != self.descriptor.modality:
            raise UsageError(f"{self.descriptor.id} encodes {self.descriptor.modality}, not {facts.modality}")

    @abstractmethod
    def encoder(self, facts: MediaFacts, rate: RatePoint) -> Encoder:
        """A codec whose descriptor offers efforts also takes `effort=n` (1 <= n <= efforts)."""

    @abstractmethod
    def decoder(self, facts: MediaFacts, rate: RatePoint, params: dict) -> Decoder:
        ...
