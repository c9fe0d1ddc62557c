"""`audio/toy-mulaw`: 8-bit mu-law PCM in fixed blocks. Small, lossy, deterministic.

The smallest complete nc codec plugin: a descriptor, an encoder that cuts the
stream into fixed-size packets whatever the caller's block sizes, a decoder,
and one hook implementation. Payload of a packet: `duration * channels` bytes,
mu-law codes, interleaved by sample.
"""
import numpy as np

from nc.codecs.base import Codec, CodecDescriptor, Decoder, Encoder, Packet, RatePoint
from nc.plugins import hookimpl

MU = 255.0


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    y = np.sign(x) * np.log1p(MU * np.minimum(np.abs(x), 1.0)) / np.log1p(MU)
    return np.clip(np.rint((y + 1) * 127.5), 0, 255).astype(np.uint8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.5 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)


class ToyEncoder(Encoder):
    def __init__(self, channels: int, block: int):
        self.params = {"block": block}
        self._channels, self._block = channels, block
        self._pending = np.zeros((0, channels), np.float32)
        self._start = 0

    def encode(self, block):
        self._pending = np.concatenate([self._pending, block])
        while len(self._pending) >= self._block:
            yield self._packet(self._pending[: self._block])
            self._pending = self._pending[self._block:]

    def flush(self):
        if len(self._pending):
            yield self._packet(self._pending)
            self._pending = self._pending[:0]

    def _packet(self, samples):
        packet = Packet(mulaw_encode(samples).tobytes(), self._start, len(samples))
        self._start += len(samples)
        return packet


class ToyDecoder(Decoder):
    def __init__(self, channels: int):
        self._channels = channels

    def decode(self, packet):
        codes = np.frombuffer(packet.payload, np.uint8)
        if len(codes) != packet.duration * self._channels:
            raise ValueError("payload size does not match the packet's duration")
        return mulaw_decode(codes).reshape(-1, self._channels)


class ToyCodec(Codec):
    descriptor = CodecDescriptor(
        id="audio/toy-mulaw", version=1, modality="audio", summary="8-bit mu-law PCM (test plugin)",
        points=(RatePoint("q8", 8, "quality"),), rank=-100,
    )

    def encoder(self, facts, rate):
        return ToyEncoder(facts.channels, block=max(1, facts.sample_rate // 4))

    def decoder(self, facts, rate, params):
        return ToyDecoder(facts.channels)


@hookimpl
def nc_register_codecs():
    return [ToyCodec()]
