"""Writes the golden container files. Run it only when the format version changes
(and then bump FORMAT_MAJOR or FORMAT_MINOR): these files pin what nc 0.1 writes."""
from pathlib import Path

from nc.bitstream.container import ContainerWriter, TrackHeader

HERE = Path(__file__).resolve().parent

TRACKS = [
    TrackHeader("video/example", 1, "", {"name": "1M", "value": 1e6, "unit": "bps"},
                {"modality": "video", "width": 64, "height": 48, "fps_num": 25, "fps_den": 1}, {"gop": 2}),
    TrackHeader("audio/example", 3, "ab" * 32, {"name": "6k", "value": 6000.0, "unit": "bps"},
                {"modality": "audio", "sample_rate": 16000, "channels": 2}, {}),
]
# (track, start, duration, keyframe, payload): audio and video interleaved by time
CHUNKS = [
    (0, 0, 2, True, b"video gop 0"),
    (1, 0, 1280, True, b"audio 0"),
    (1, 1280, 1280, False, b"audio 1"),
    (0, 2, 1, True, b"video gop 1"),
    (1, 2560, 100, False, b""),
]


def write(path: Path) -> None:
    with open(path, "wb") as f:
        w = ContainerWriter(f, TRACKS, "nc golden")
        for chunk in CHUNKS:
            w.write_chunk(*chunk)
        w.close()


if __name__ == "__main__":
    write(HERE / "v1_two_tracks.ncb")
