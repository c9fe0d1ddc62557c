"""audio/opus: libopus through PyAV, at any input rate and 1..8 channels.

Pipeline: input rate -> StreamResampler -> 48 kHz -> 20 ms libopus frames ->
Opus packets, grouped 100 to an nc Packet (two seconds of input). The decoder
runs the way back: Opus packets -> 48 kHz -> drop the encoder's pre-skip ->
StreamResampler -> input rate.

nc Packet payload: the group's Opus packets back to back, each preceded by its
length n (0..1275) coded as in RFC 6716 section 3.2.1 (so 3-8 channels, several
Opus streams per packet, are coded at up to 256 kbps):

    n < 252:   one byte, n
    n >= 252:  two bytes, b0 = 252 + (n & 3), b1 = (n - b0) >> 2

then the n bytes of the Opus packet (RFC 6716). At 6 kbps that is one byte per
20 ms frame (0.4 kbps) where a u16 would cost 0.8 kbps.

Packet g covers input samples [2 g rate, 2 g rate + duration): every group but
the last holds exactly 100 Opus packets (96000 samples at 48 kHz, i.e. 2 * `rate`
input samples); the last holds the rest, including the packets libopus emits
on flush, and its duration is whatever input remains, so the durations sum to
the input length.

Encoder params (track header): {"preskip": samples at 48 kHz the decoder drops
after every reset (OpusHead pre-skip, 312 for libopus), "opus_head": the
encoder's OpusHead (RFC 7845 section 5.1) as hex, carrying the channel mapping}.
"""
from __future__ import annotations

import struct

import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint, RateRange
from nc.errors import CorruptChunkError, UsageError
from nc.media.facts import AudioFacts
from nc.media.files import CHANNEL_LAYOUTS
from nc.media.resample import StreamResampler

OPUS_RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz
GROUP_SECONDS = 2  # per nc Packet: the container's ~60 bytes per chunk cost 0.24 kbps, not 0.48
FRAMES_PER_PACKET = 50 * GROUP_SECONDS  # 20 ms frames
MAX_CHANNELS = 8
MAX_OPUS_PACKET = 1275  # bytes, RFC 6716
# 3-8 channels are several Opus streams in one packet, which libopus does not keep within 1275 bytes (3
# channels of noise at 320k overflowed it); at 256k a packet averages 640 bytes
MAX_MULTISTREAM_BPS = 256_000
PLANAR_FLOATS = {"fltp": np.float32, "dblp": np.float64}  # what libopus decodes to, planar
MAX_OPUS_FRAME = 5760  # samples at 48 kHz: 120 ms, the longest an Opus packet decodes to (RFC 6716)
# Layouts libopus maps with Vorbis channel order (mapping family 0 for 1-2, 1 for 3-8).


def _k(bps: int) -> RatePoint:
    return RatePoint(f"{bps // 1000}k", float(bps), "bps")


class OpusCodec(Codec):
    descriptor = CodecDescriptor(
        id="audio/opus",
        version=1,
        modality="audio",
        summary="Opus (libopus) at 48 kHz, 20 ms frames, VBR; any input rate via a resampler, 1-8 channels",
        points=(_k(6000), _k(12000), _k(24000), _k(64000)),
        ranges=(RateRange("bps", 5000, 510000),),
        default=_k(24000),
        streaming=True,
        deterministic=True,
        weights_sha256="",
        rank=10,
        # libopus carries state from packet to packet: RFC 7845 (4.6) has a seek decode at least 80 ms
        # before the target, after which a cold decoder has converged to within the codec's noise
        preroll=0.08,
    )

    def check(self, facts) -> None:
        super().check(facts)
        if not 1 <= facts.channels <= MAX_CHANNELS:
            raise UsageError(f"audio/opus encodes 1 to {MAX_CHANNELS} channels, not {facts.channels}")

    def encoder(self, facts: AudioFacts, rate: RatePoint) -> Encoder:
        self.check(facts)
        if rate.unit != "bps":
            raise UsageError(f"audio/opus takes a bitrate in bps, not {rate.unit}")
        if facts.channels > 2 and rate.value > MAX_MULTISTREAM_BPS:
            raise UsageError(f"audio/opus codes {facts.channels} channels at up to {MAX_MULTISTREAM_BPS // 1000}k, "
                             f"not {rate.name}: above it their Opus packets outgrow the {MAX_OPUS_PACKET} bytes "
                             f"its payload's lengths hold")
        return OpusEncoder(facts, int(round(rate.value)))

    def decoder(self, facts: AudioFacts, rate: RatePoint, params: dict) -> Decoder:
        self.check(facts)
        return OpusDecoder(facts, params)


def _open_encoder(channels: int, bps: int):
    import av

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = OPUS_RATE
    ctx.layout = CHANNEL_LAYOUTS[channels]
    ctx.format = "flt"  # packed float32: frames are built straight from (n, ch) arrays
    ctx.bit_rate = bps
    ctx.open()
    return ctx


def _preskip(opus_head: bytes) -> int:
    """OpusHead: 'OpusHead'(8) version(1) channels(1) pre_skip(u16 LE) ..."""
    return struct.unpack_from("<H", opus_head, 10)[0]


def _length_bytes(n: int) -> bytes:
    if n < 252:
        return bytes([n])
    first = 252 + (n & 3)
    return bytes([first, (n - first) >> 2])


def pack_group(packets: list[bytes]) -> bytes:
    for p in packets:
        if len(p) > MAX_OPUS_PACKET:
            raise UsageError(f"audio/opus made a packet of {len(p)} bytes, over the {MAX_OPUS_PACKET} its payload's "
                             f"lengths hold: ask for a lower bitrate")
    return b"".join(_length_bytes(len(p)) + p for p in packets)


def unpack_group(payload: bytes) -> list[bytes]:
    packets, pos = [], 0
    while pos < len(payload):
        n = payload[pos]
        pos += 1
        if n >= 252:
            if pos >= len(payload):
                raise CorruptChunkError("opus payload ends inside a packet length")
            n += 4 * payload[pos]
            pos += 1
        if pos + n > len(payload):
            raise CorruptChunkError("opus payload ends inside a packet")
        packets.append(payload[pos:pos + n])
        pos += n
    return packets


class OpusEncoder(Encoder):
    def __init__(self, facts: AudioFacts, bps: int):
        self.rate, self.channels = facts.sample_rate, facts.channels
        self.group_in = GROUP_SECONDS * self.rate  # input samples per nc Packet
        self.ctx = _open_encoder(self.channels, bps)
        head = bytes(self.ctx.extradata)
        self.params = {"preskip": _preskip(head), "opus_head": head.hex()}
        self.resampler = StreamResampler(self.rate, OPUS_RATE, self.channels)
        self.pending = np.zeros((0, self.channels), np.float32)  # 48 kHz samples short of a frame
        self.frames_in = 0  # Opus frames handed to libopus (their pts, in frames)
        self.opus_packets: list[bytes] = []  # encoded, not yet grouped
        self.group = 0  # index of the next nc Packet
        self.n_in = 0  # input samples received

    def encode(self, block: np.ndarray) -> list[Packet]:
        block = np.asarray(block, np.float32)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise UsageError(f"audio/opus expects (samples, {self.channels}) blocks, got shape {block.shape}")
        self.n_in += len(block)
        self._feed(self.resampler.process(block))
        # A group is final only once input exists beyond it; otherwise it may be
        # the last one, which must also take the packets libopus emits on flush.
        out = []
        while (len(self.opus_packets) >= FRAMES_PER_PACKET
               and self.n_in > (self.group + 1) * self.group_in):
            out.append(self._emit(FRAMES_PER_PACKET, self.group_in))
        return out

    def flush(self) -> list[Packet]:
        self._feed(self.resampler.flush())
        if len(self.pending):  # zero-pad the last frame: its tail is trimmed on decode
            self._frame(np.concatenate([self.pending, np.zeros((FRAME - len(self.pending), self.channels), np.float32)]))
        if self.frames_in:
            self.opus_packets += [bytes(p) for p in self.ctx.encode(None)]
        out = []
        while self.opus_packets:
            last = self.n_in <= (self.group + 1) * self.group_in
            take = len(self.opus_packets) if last else FRAMES_PER_PACKET
            out.append(self._emit(take, self.n_in - self.group * self.group_in if last else self.group_in))
        return out

    def _feed(self, x48: np.ndarray) -> None:
        x = np.concatenate([self.pending, x48]) if len(self.pending) else x48
        whole = len(x) // FRAME * FRAME
        for i in range(0, whole, FRAME):
            self._frame(x[i:i + FRAME])
        self.pending = x[whole:]

    def _frame(self, samples: np.ndarray) -> None:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples).reshape(1, -1), format="flt",
                                           layout=CHANNEL_LAYOUTS[self.channels])
        frame.sample_rate = OPUS_RATE
        frame.pts = self.frames_in * FRAME
        self.frames_in += 1
        self.opus_packets += [bytes(p) for p in self.ctx.encode(frame)]

    def _emit(self, count: int, duration: int) -> Packet:
        group, self.opus_packets = self.opus_packets[:count], self.opus_packets[count:]
        packet = Packet(pack_group(group), start=self.group * self.group_in, duration=duration, keyframe=True)
        self.group += 1
        return packet


class OpusDecoder(Decoder):
    def __init__(self, facts: AudioFacts, params: dict):
        self.rate, self.channels = facts.sample_rate, facts.channels
        try:
            head = bytearray(bytes.fromhex(params["opus_head"]))
            self.preskip = int(params["preskip"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptChunkError(f"audio/opus track parameters are missing or malformed ({e})") from None
        if len(head) < 19 or head[:8] != b"OpusHead" or not 0 <= self.preskip <= 48_000:
            raise CorruptChunkError("audio/opus track parameters hold no valid OpusHead")
        head[10:12] = b"\0\0"  # we drop the pre-skip ourselves; ffmpeg would otherwise drop it only once
        self.head = bytes(head)
        self.reset()

    def reset(self) -> None:
        import av

        self.ctx = av.CodecContext.create("opus", "r")  # ffmpeg's own decoder: float output
        self.ctx.sample_rate = OPUS_RATE
        self.ctx.layout = CHANNEL_LAYOUTS[self.channels]
        self.ctx.extradata = self.head
        self.skip = self.preskip
        self.resampler = StreamResampler(OPUS_RATE, self.rate, self.channels)

    def decode(self, packet: Packet) -> np.ndarray:
        import av

        pcm, samples = [], 0
        # the most a group of this duration decodes to: its samples at 48 kHz, the pre-skip still to drop and
        # one 120 ms Opus frame of slack; a crafted group of tiny 120 ms packets must not fill memory first
        most = -(-packet.duration * OPUS_RATE // self.rate) + self.skip + MAX_OPUS_FRAME
        try:
            for data in unpack_group(packet.payload):
                for frame in self.ctx.decode(av.Packet(data)):
                    pcm.append(_frame_array(frame, self.channels))
                    samples += len(pcm[-1])
                    if samples > most:
                        raise CorruptChunkError(f"opus packet group decodes to more than its {packet.duration} samples")
        except av.FFmpegError as e:
            raise CorruptChunkError(f"opus packet does not decode: {e}") from None
        x48 = np.concatenate(pcm) if pcm else np.zeros((0, self.channels), np.float32)
        drop = min(self.skip, len(x48))
        self.skip -= drop
        return self.resampler.process(x48[drop:])

    def flush(self) -> np.ndarray:
        tail = self.resampler.flush()
        self.reset()  # whatever comes next starts a new stream
        return tail


def _frame_array(frame, channels: int) -> np.ndarray:
    if frame.format.is_planar:  # plane by plane: PyAV's to_ndarray reads a 9th plane of 8-channel frames (a crash)
        dtype = PLANAR_FLOATS.get(frame.format.name)
        if dtype is None:
            raise CorruptChunkError(f"libopus decoded to sample format {frame.format.name}, not float")
        return np.stack([np.frombuffer(plane, dtype, frame.samples) for plane in frame.planes[:channels]],
                        1).astype(np.float32)
    return np.ascontiguousarray(frame.to_ndarray().reshape(-1, channels), dtype=np.float32)
