"""video/h264 (libx264) and video/h265 (libx265) through PyAV.

Frames are RGB uint8; they are edge-padded to even width and height for
yuv420p (BT.601, limited range: swscale's defaults both ways), and for x265 to
at least 16x16, then cropped back on decode, so the track's facts keep the
exact size.

GOPs are closed and fixed: an IDR every K = round(2 * fps) frames (keyint =
min-keyint = K, scene cuts off, the GOP's first frame forced to IDR), and the
encoder repeats its parameter sets (SPS/PPS, or VPS/SPS/PPS) in-band before
every IDR. So each GOP decodes on its own, with a fresh decoder. One nc Packet
per GOP: start = its first frame index, duration = its frame count (K, less
for the last), keyframe = True. Payload: the GOP's encoded packets in decode
order, each as

    offset  size  field
    0       4     n: u32 LE, length of the packet data     (struct "<Iq")
    4       8     pts: i64 LE, display frame index
    12      n     Annex B bytes of one access unit

Track params: {"keyint": K}, the GOP length in frames (informative: the
decoder needs nothing from them).

Rates: "bps" is average-bitrate (ABR) mode; "quality" is the CRF, 0..51,
LOWER IS BETTER (0 is near-lossless). Presets: "medium" for both (the usual reference
setting, and what the video benchmark compares against); `--effort 1` uses "slow".
Encoder thread counts are pinned so the bytes do not depend on the host's
core count.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint, RateRange, check_effort
from nc.errors import CorruptChunkError, UsageError
from nc.media.facts import VideoFacts

_UNIT = struct.Struct("<Iq")  # u32 LE length, i64 LE pts
ENCODER_THREADS = 4
PRESETS = ("medium", "slow")  # at each --effort


@dataclass(frozen=True)
class _Spec:
    """What differs between the two families."""

    encoder: str  # ffmpeg encoder name
    decoder: str  # ffmpeg decoder name
    params_option: str  # "x264-params" / "x265-params"
    extra_params: str  # appended to the keyint settings
    min_side: int  # smallest coded width or height the encoder opens with


H264 = _Spec("libx264", "h264", "x264-params", f"open-gop=0:threads={ENCODER_THREADS}", 2)
H265 = _Spec("libx265", "hevc", "x265-params",
             f"open-gop=0:repeat-headers=1:log-level=error:pools={ENCODER_THREADS}:frame-threads=2", 16)


def _descriptor(name: str, default_crf: int, summary: str) -> CodecDescriptor:
    return CodecDescriptor(
        id=f"video/{name}",
        version=1,
        modality="video",
        summary=summary,
        ranges=(RateRange("bps", 50_000, 50_000_000), RateRange("quality", 0, 51)),
        default=RatePoint(f"q{default_crf}", float(default_crf), "quality"),
        streaming=True,
        deterministic=True,
        weights_sha256="",
        rank=10,
        efforts=len(PRESETS) - 1,
    )


def keyint(facts: VideoFacts) -> int:
    """Frames per GOP: about two seconds."""
    return max(1, round(float(facts.fps) * 2))


class _H26xCodec(Codec):
    spec: _Spec

    def encoder(self, facts: VideoFacts, rate: RatePoint, effort: int = 0) -> Encoder:
        self.check(facts)
        if rate.unit not in ("bps", "quality"):
            raise UsageError(f"{self.descriptor.id} takes a bitrate or a CRF quality, not {rate.unit}")
        check_effort(self.descriptor, effort)
        return H26xEncoder(self.spec, facts, rate, PRESETS[effort])

    def decoder(self, facts: VideoFacts, rate: RatePoint, params: dict) -> Decoder:
        self.check(facts)
        return H26xDecoder(self.spec, facts)


class H264Codec(_H26xCodec):
    spec = H264
    descriptor = _descriptor("h264", 23, "H.264 (libx264, preset medium), closed 2 s GOPs; quality = CRF 0..51, lower is better")


class H265Codec(_H26xCodec):
    spec = H265
    descriptor = _descriptor("h265", 28, "H.265/HEVC (libx265, preset medium), closed 2 s GOPs; quality = CRF 0..51, lower is better")


def coded_size(spec: _Spec, facts: VideoFacts) -> tuple[int, int]:
    """(width, height) the encoder sees: even for 4:2:0, and at least spec.min_side."""
    return tuple(max(spec.min_side, n + (n & 1)) for n in (facts.width, facts.height))


def _open_encoder(spec: _Spec, facts: VideoFacts, rate: RatePoint, k: int, preset: str = PRESETS[0]):
    import av
    from fractions import Fraction

    ctx = av.CodecContext.create(spec.encoder, "w")
    ctx.width, ctx.height = coded_size(spec, facts)
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(facts.fps_den, facts.fps_num)  # pts counts frames
    ctx.framerate = facts.fps
    ctx.gop_size = k  # ffmpeg's default of 12 would otherwise win for x264
    ctx.thread_count = ENCODER_THREADS
    params = f"keyint={k}:min-keyint={k}:scenecut=0:{spec.extra_params}"
    if spec is H264 and (ctx.width < 320 or ctx.height < 240):
        # x264 (core 165) reads uninitialised lookahead memory in its macroblock
        # tree on small frames (valgrind shows it; the bytes then vary from run
        # to run). mbtree buys little at these sizes, so it goes.
        params += ":mbtree=0"
    options = {"preset": preset, "forced-idr": "1", spec.params_option: params}
    if rate.unit == "quality":
        options["crf"] = f"{rate.value:g}"
    else:
        ctx.bit_rate = int(rate.value)
    ctx.options = options
    # No GLOBAL_HEADER flag: libx264/libx265 then put the parameter sets in-band.
    try:
        ctx.open()
    except av.FFmpegError as e:
        raise UsageError(f"{spec.encoder} cannot encode {facts.width}x{facts.height} at {rate.name}: {e}") from None
    return ctx


def pack_gop(units: list[tuple[int, bytes]]) -> bytes:
    return b"".join(_UNIT.pack(len(data), pts) + data for pts, data in units)


def unpack_gop(payload: bytes) -> list[tuple[int, bytes]]:
    units, pos = [], 0
    while pos < len(payload):
        if pos + _UNIT.size > len(payload):
            raise CorruptChunkError("video payload ends inside a packet header")
        n, pts = _UNIT.unpack_from(payload, pos)
        pos += _UNIT.size
        if pos + n > len(payload):
            raise CorruptChunkError("video payload ends inside a packet")
        units.append((pts, payload[pos:pos + n]))
        pos += n
    return units


class H26xEncoder(Encoder):
    def __init__(self, spec: _Spec, facts: VideoFacts, rate: RatePoint, preset: str = PRESETS[0]):
        self.facts, self.k = facts, keyint(facts)
        self.coded = coded_size(spec, facts)
        self.ctx = _open_encoder(spec, facts, rate, self.k, preset)
        self.params = {"keyint": self.k}  # informative: the decoder needs nothing
        self.frames = 0  # frames handed to the encoder
        self.gop = 0  # index of the GOP being collected
        self.units: list[tuple[int, bytes]] = []  # (pts, data) of that GOP, decode order

    def encode(self, block: np.ndarray) -> list[Packet]:
        f = self.facts
        block = np.asarray(block)
        if block.ndim == 3:
            block = block[None]
        if block.shape[1:] != (f.height, f.width, 3) or block.dtype != np.uint8:
            raise UsageError(f"expected uint8 frames of shape (n, {f.height}, {f.width}, 3), got {block.dtype} {block.shape}")
        out = []
        for rgb in block:
            for p in self.ctx.encode(self._frame(rgb)):
                out += self._take(p)
        return out

    def flush(self) -> list[Packet]:
        if not self.frames:
            return []
        out = []
        for p in self.ctx.encode(None):
            out += self._take(p)
        if self.units:
            out.append(self._emit(self.frames - self.gop * self.k))
        return out

    def _frame(self, rgb: np.ndarray):
        import av

        f, (width, height) = self.facts, self.coded
        pad = ((0, height - f.height), (0, width - f.width), (0, 0))
        frame = av.VideoFrame.from_ndarray(np.pad(rgb, pad, mode="edge"), format="rgb24").reformat(format="yuv420p")
        frame.pts = self.frames
        if self.frames % self.k == 0:
            frame.pict_type = av.video.frame.PictureType.I  # with forced-idr: an IDR opens every GOP
        self.frames += 1
        return frame

    def _take(self, p) -> list[Packet]:
        # Closed GOPs: every access unit of GOP g precedes GOP g+1's IDR in decode
        # order, so the first unit with a later pts completes the current GOP.
        gop, out = int(p.pts) // self.k, []
        if gop < self.gop:
            raise RuntimeError(f"{self.ctx.name} emitted frame {p.pts} after GOP {self.gop} began: GOP not closed")
        if gop > self.gop and self.units:
            out.append(self._emit(self.k))
        self.gop = gop
        self.units.append((int(p.pts), bytes(p)))
        return out

    def _emit(self, duration: int) -> Packet:
        packet = Packet(pack_gop(self.units), start=self.gop * self.k, duration=duration, keyframe=True)
        self.units = []
        return packet


class H26xDecoder(Decoder):
    """Stateless between packets: every GOP gets a fresh decoder."""

    def __init__(self, spec: _Spec, facts: VideoFacts):
        self.spec, self.facts = spec, facts

    def _checked(self, new: list, frames: list, duration: int) -> list:
        """Frames as they come out, refused at the first of another size or past the GOP's duration:
        a crafted GOP (a large frame, then a small P-frame repeated) must not fill memory first."""
        width, height = coded_size(self.spec, self.facts)
        if any(fr.width != width or fr.height != height for fr in new):
            raise CorruptChunkError(f"{self.spec.decoder} GOP has a frame size other than the track's")
        if len(frames) + len(new) > duration:
            raise CorruptChunkError(f"{self.spec.decoder} GOP decodes to more than its {duration} frames")
        return new

    def decode(self, packet: Packet) -> np.ndarray:
        import av

        f = self.facts
        ctx = av.CodecContext.create(self.spec.decoder, "r")
        frames = []
        try:
            for pts, data in unpack_gop(packet.payload):
                unit = av.Packet(data)
                unit.pts = pts
                frames += self._checked(ctx.decode(unit), frames, packet.duration)
            frames += self._checked(ctx.decode(None), frames, packet.duration)
        except av.FFmpegError as e:
            raise CorruptChunkError(f"{self.spec.decoder} GOP does not decode: {e}") from None
        if len(frames) != packet.duration:
            raise CorruptChunkError(f"{self.spec.decoder} GOP decoded to {len(frames)} frames, expected {packet.duration}")
        frames.sort(key=lambda fr: fr.pts)
        rgb = np.empty((len(frames), f.height, f.width, 3), np.uint8)
        for i, fr in enumerate(frames):
            rgb[i] = fr.to_ndarray(format="rgb24")[:f.height, :f.width]
        return rgb
