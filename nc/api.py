"""One-call encoding and decoding: `nc.encode`, `nc.decode`, and the file-to-file jobs the CLI runs."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from nc.errors import CorruptChunkError, UsageError
from nc.media.facts import ImageFacts, facts_to_json
from nc.media.files import MediaSink, local_path, open_media
from nc.stream import Reader, TrackInfo, TrackSpec, Writer, facts_from_kwargs, join_pieces
from nc.stream import open as nc_open


@dataclass
class DecodedTrack:
    info: TrackInfo
    data: np.ndarray  # audio (samples, channels) float32; image (h, w, c) / video (n, h, w, 3) uint8


@dataclass
class Decoded:
    """What `nc.decode` returns: each track's media with its facts, and any damage stepped over."""

    tracks: list[DecodedTrack]
    damage: list[str] = field(default_factory=list)

    def __getitem__(self, i: int) -> DecodedTrack:
        return self.tracks[i]

    @property
    def data(self) -> np.ndarray:
        """The first track's media."""
        return self.tracks[0].data

    def first(self, modality: str) -> DecodedTrack | None:
        return next((t for t in self.tracks if t.info.modality == modality), None)


def encode(media, codec: str | None = None, *, bitrate=None, quality=None, effort: int = 0, **facts) -> bytes:
    """Encode a media file path, or an array with its facts, to the bytes of an `.ncb` file.

    `nc.encode(samples, sample_rate=16000, bitrate="6k")` (audio: (samples, channels) or (samples,));
    `nc.encode(image_uint8_hwc)` (image facts follow from the shape);
    `nc.encode(frames, fps=25)` (video: width and height follow from the shape).
    `effort=1`: a slower encoder search where the codec offers one (`nc codecs`: image/hvae,
    video/wfvae and the nc-classical codecs).
    """
    out = io.BytesIO()
    if isinstance(media, (str, os.PathLike)):
        _no_facts_for_a_file(facts)
        encode_file(os.fspath(media), out, codec=codec, bitrate=bitrate, quality=quality, effort=effort)
        return out.getvalue()
    spec_facts = _array_facts(media, facts)
    with Writer(out, [TrackSpec(spec_facts, codec, bitrate, quality, effort)]) as w:
        w.write(media)
    return out.getvalue()


def _no_facts_for_a_file(facts: dict) -> None:
    if facts:  # a file says what it holds; a name given here is a typo or a wrong expectation
        raise UsageError(f"unknown arguments for a file: {', '.join(sorted(facts))} (a file's facts come from the file)")


def _array_facts(media, facts: dict):
    """An array's media facts: those given, completed from its shape (audio's channels, a video's size,
    all of an image's)."""
    shape = np.shape(media)
    if "fps" in facts and len(shape) == 4:
        facts = {"height": shape[1], "width": shape[2], **facts}
    if "sample_rate" in facts and "channels" not in facts and len(shape) in (1, 2):
        if len(shape) == 2 and not 0 < shape[1] < shape[0]:  # torchaudio.load's (channels, samples), or nothing
            raise UsageError(f"audio arrays are (samples, channels), or 1-D for mono; this one is {shape}"
                             + (": transpose it" if 0 < shape[0] < shape[1] else ""))
        facts = {"channels": 1 if len(shape) == 1 else shape[1], **facts}
    return facts_from_kwargs(**facts) if facts else _image_facts(shape)


def _image_facts(shape: tuple) -> ImageFacts:
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4)):
        channels = 1 if len(shape) == 2 else shape[2]
        return ImageFacts(shape[1], shape[0], {1: "L", 3: "RGB", 4: "RGBA"}[channels])
    channels_first = len(shape) == 3 and shape[0] in (1, 3, 4)
    raise UsageError(f"an array of shape {shape} is no image (height, width[, 1, 3 or 4 channels])"
                     + ("; a channels-first one needs a.transpose(1, 2, 0)" if channels_first else
                        ": pass sample_rate=... for audio or fps=... for video"))


def decode(source, *, ignore_errors: bool = False) -> Decoded:
    """Decode `.ncb` bytes, a path or a binary file object into arrays (`decode_file` writes a media file)."""
    if isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.ndim == 1:  # np.frombuffer's
        source = source.tobytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, np.ndarray):
        raise UsageError(f"decode takes an .ncb file's bytes (or a 1-D uint8 array of them), a path or a binary "
                         f"file object, not a {source.dtype} array of shape {source.shape}")
    with nc_open(source, "rb", ignore_errors=ignore_errors) as reader:
        pieces: dict[int, list[np.ndarray]] = {t.index: [] for t in reader.tracks}
        for track, block in reader:
            pieces[track].append(block)
        tracks = [DecodedTrack(info, join_pieces(info, pieces[info.index])) for info in reader.tracks]
        return Decoded(tracks, list(reader.damage))


@dataclass
class EncodeReport:
    tracks: list[tuple[str, str]]  # (codec id, rate point name)
    bytes: int
    seconds: float  # media duration (0 for an image)
    pixels: int = 0  # an image's width x height (0 for audio and video)


def encode_file(path: str, out: BinaryIO, codec: str | None = None, bitrate=None, quality=None,
                audio_codec: str | None = None, audio_bitrate=None, progress: bool = False,
                effort: int = 0) -> EncodeReport:
    """Encode a media file into an open binary stream. A video's soundtrack becomes a second track."""
    with local_path(path) as local:
        source = open_media(local)
        main = source.facts[0].modality
        if len(source.facts) == 1 and (audio_codec or audio_bitrate):
            raise UsageError("--audio-codec/--audio-bitrate are for a video's soundtrack; use --codec/--bitrate")
        # the first track takes --codec/--bitrate/--quality/--effort, a video's soundtrack the --audio-* options
        sound_codec = audio_codec or (None if audio_bitrate else _soundtrack_default())
        specs = [TrackSpec(f, codec, bitrate, quality, effort) if i == 0 else TrackSpec(f, sound_codec, audio_bitrate)
                 for i, f in enumerate(source.facts)]
        writer = Writer(out, specs)
        length = [0] * len(specs)
        # refining every GOP (--effort 1) codes a few frames a second: worth a bar however short the video
        slow = effort >= 1 and main == "video"
        with _progress(progress, source.seconds, "encoding", min_seconds=0 if slow else 60) as bar:
            for track, block in source.blocks():
                writer.write(block, track)
                if track == 0 and main != "image":
                    before = source.facts[0].seconds(length[0])
                    length[0] += len(block)
                    bar.update(source.facts[0].seconds(length[0]) - before)
        writer.close()
        seconds = source.facts[0].seconds(length[0]) if main != "image" else 0.0
        pixels = source.facts[0].width * source.facts[0].height if main == "image" else 0
        return EncodeReport(list(zip(writer.codecs, [r.name for r in writer.rates])), writer.bytes_written, seconds,
                            pixels)


#: a video's sound without --audio-codec/--audio-bitrate: music and noise as often as speech, so the general
#: codec at its own default rate where it is installed, not the speech-trained audio/rvq that audio files default to
SOUNDTRACK_CODEC = "audio/opus"


def _soundtrack_default() -> str | None:
    from nc.plugins import registry

    return SOUNDTRACK_CODEC if SOUNDTRACK_CODEC in registry().codecs else None


def decode_file(source, out_path: str, fmt: str | None = None, *, ignore_errors: bool = False,
                progress: bool = False) -> Reader:
    """Decode an `.ncb` path or stream to a media file; returns the reader (its tracks and damage)."""
    with nc_open(source, "rb", ignore_errors=ignore_errors) as reader:
        sink = MediaSink(out_path, [t.facts for t in reader.tracks], fmt)
        main = reader.tracks[0]
        try:
            with _progress(progress, main.seconds, "decoding") as bar:
                for track, block in reader:
                    sink.write(track, block)
                    if track == 0 and main.modality != "image":
                        bar.update(main.facts.seconds(len(block)))
            if main.modality == "image" and not sink.written[0]:
                raise CorruptChunkError("the image could not be decoded")
            if reader.damage and not any(sink.written):  # an empty file is no recovery
                raise CorruptChunkError(f"nothing could be decoded: {reader.damage[0]}")
        except BaseException:
            sink.abort()
            raise
        sink.close()
        return reader


class _NoBar:
    def update(self, _):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass


def _progress(enabled: bool, total_seconds: float | None, what: str, min_seconds: float = 60):
    """A tqdm bar on stderr for inputs of at least `min_seconds` (tqdm hides itself when stderr is not a TTY)."""
    if not enabled or not total_seconds or total_seconds < min_seconds:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=round(total_seconds, 1), unit="s", desc=what, disable=None, leave=False,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")


def _token_codec(codec: str):
    from nc.plugins import registry

    c = registry().get(codec, requested=True)
    if not hasattr(c, "tokenize"):
        raise UsageError(f"{codec} does not expose tokens")
    return c


TOKEN_CODECS = {"audio": "audio/rvq", "image": "image/vqgan", "video": "video/bsqvit"}  # tokens without a codec


def tokens(media, codec: str | None = None, bitrate=None, quality=None, **facts) -> np.ndarray:
    """Discrete codes of a file or array: what the .ncb would hold, in the codec's token dtype.
    The codec defaults to the media's kind: audio/rvq, image/vqgan or video/bsqvit (`TOKEN_CODECS`).
    Audio: (channels, stages, frames), int16 for audio/rvq, int64 for audio/fsq (mixed-radix FSQ codes).
    Images (image/vqgan): int16 (stages, rows, columns), one token per 16 x 16 pixels; an image
    array (height, width, channels) needs no facts."""
    return tokens_and_facts(media, codec, bitrate, quality, **facts)[0]


def tokens_and_facts(media, codec: str | None = None, bitrate=None, quality=None,
                     **facts) -> tuple[np.ndarray, dict]:
    """`tokens`, and what the codes do not say: {"codec", "rate", "facts" (as in a track header), "length"
    (samples or frames; 1 for an image)}, JSON-able (`nc tokens -o x.npz` stores it beside the codes)."""
    length = [0]

    def counted(blocks):
        for block in blocks:
            length[0] += len(block) if spec.modality != "image" else 1
            yield block

    if isinstance(media, (str, os.PathLike)):
        _no_facts_for_a_file(facts)
        with local_path(os.fspath(media)) as local:
            source = open_media(local)
            spec = source.facts[0]
            if len(source.facts) > 1 and spec.modality != "video":
                raise UsageError(f"{media}: tokens are of one track, and this file holds {len(source.facts)}")
            c, codec, rate = _tokenizer(codec, spec.modality, bitrate, quality, f"{media}: ")
            codes = c.tokenize(counted(b for t, b in source.blocks() if t == 0), spec, rate)
    else:
        from nc.stream import as_media

        spec = _array_facts(media, facts)
        c, codec, rate = _tokenizer(codec, spec.modality, bitrate, quality, "")
        codes = c.tokenize(counted([as_media(media, spec)]), spec, rate)
    if not length[0]:  # codes of nothing would make nothing again: say so now, not at detokenize
        raise UsageError(f"{'' if not isinstance(media, (str, os.PathLike)) else f'{media}: '}"
                         f"no {spec.modality} to make tokens of (it is empty)")
    return codes, {"codec": codec, "rate": rate.name, "facts": facts_to_json(spec), "length": length[0]}


def _tokenizer(codec: str | None, modality: str, bitrate, quality, where: str):
    """(codec object, its id, rate point) for tokens of `modality`: the codec asked for, else the kind's default."""
    codec = codec or TOKEN_CODECS[modality]
    c = _token_codec(codec)
    modalities = getattr(c, "token_modalities", (c.descriptor.modality,))  # video/bsqvit: video and images
    if modality not in modalities:
        raise UsageError(f"{where}{codec} makes tokens of {' and '.join(modalities)}, not {modality} "
                         f"(for {modality}: {TOKEN_CODECS[modality]})")
    return c, codec, c.descriptor.resolve(bitrate, quality)


def detokenize(codes, codec: str = "audio/rvq", sample_rate: int = 16000) -> np.ndarray:
    """Media from codes made by `tokens`: audio (samples, channels) float32, or an image
    uint8 (16 x rows, 16 x columns, 3) (the padding of the original size is not in the tokens)."""
    c = _token_codec(codec)
    if c.descriptor.modality == "audio":
        sample_rate = facts_from_kwargs(sample_rate=sample_rate).sample_rate  # checked as a writer's would be
    if np.size(codes) == 0:
        raise UsageError(f"no tokens to make media of: the array has shape {np.shape(codes)}")
    return c.detokenize(codes, sample_rate)
