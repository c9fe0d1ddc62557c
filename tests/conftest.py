"""Shared fixtures. The toy plugin under tests/plugins is pip-installed into a
temporary folder once per session, so the codec registry finds it the way it
finds any third-party plugin: through its entry point."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TOY_PLUGIN = Path(__file__).resolve().parent / "plugins" / "nc-toy"


@pytest.fixture(scope="session", autouse=True)
def toy_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("toy-plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(TOY_PLUGIN)], check=True, capture_output=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    from nc.plugins import registry

    registry.cache_clear()
    yield target
    registry.cache_clear()


@pytest.fixture
def tone():
    """Two seconds of a 16 kHz mono test signal: a chirp plus a little noise."""
    t = np.arange(32000) / 16000
    rng = np.random.default_rng(0)
    x = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)[:, None]


def run_nc(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the real `nc` command in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "nc", *map(str, args)], input=stdin,
                          capture_output=True, timeout=300)


def panning_clip(frames: int, height: int, width: int, seed: int = 0):
    """uint8 (frames, height, width, 3): a textured scene panning right by 2 pixels per frame, so
    frames resemble each other, as a video codec's test material."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (height // 4 + 1, (width + 2 * frames) // 4 + 1, 3)).astype(np.uint8)
    scene = np.kron(scene, np.ones((4, 4, 1), np.uint8))
    return np.stack([scene[:height, 2 * t:2 * t + width] for t in range(frames)])


def recrc_field(data: bytes, chunk_offset: int, field_at: int, value: int, size: int) -> bytes:
    """Overwrite a field inside one chunk's body and fix the chunk's CRC, so the damage is 'valid'."""
    import struct
    import zlib

    b = bytearray(data)
    (length,) = struct.unpack_from("<I", b, chunk_offset)
    b[chunk_offset + 8 + field_at: chunk_offset + 8 + field_at + size] = value.to_bytes(size, "little")
    crc_at = chunk_offset + 8 + length
    b[crc_at:crc_at + 4] = struct.pack("<I", zlib.crc32(bytes(b[chunk_offset + 4:crc_at])))
    return bytes(b)


def decode_fails_at(monkeypatch, codec, call: int, error: BaseException) -> list[int]:
    """Make `codec`'s decoders raise `error` on the `call`-th packet decoded (counting from 1, over all
    of them); returns the starts of the packets they were given."""
    make_decoder, starts = codec.decoder, []

    def decoder(*args):
        inner = make_decoder(*args)
        decode = inner.decode

        def failing(packet):
            starts.append(packet.start)
            if len(starts) == call:
                raise error
            return decode(packet)

        inner.decode = failing
        return inner

    monkeypatch.setattr(codec, "decoder", decoder)
    return starts
