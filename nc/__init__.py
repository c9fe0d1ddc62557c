"""nc: learned and classical media codecs in one container, `.ncb`.

    import nc
    data = nc.encode("speech.wav", bitrate="6k")     # bytes of an .ncb file
    media = nc.decode(data)                          # arrays plus their facts
    with nc.open("long.ncb", "wb", codec="audio/opus", bitrate="12k", sample_rate=16000) as w:
        w.write(samples)                             # any number of pieces
    with nc.open("long.ncb", "rb") as r:
        for track, piece in r: ...
"""
__version__ = "0.1.0"

from nc.errors import NCError  # noqa: E402
from nc.stream import TrackSpec, open  # noqa: E402,A004
from nc.api import decode, detokenize, encode, tokens  # noqa: E402

__all__ = ["NCError", "TrackSpec", "decode", "detokenize", "encode", "open", "tokens", "__version__"]
