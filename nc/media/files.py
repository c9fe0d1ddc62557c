"""Reading media files into blocks of arrays, and writing decoded arrays back to files.

Readers stream: audio comes in blocks via soundfile (WAV, FLAC, Ogg, ...) or
PyAV (MP3, M4A, Opus, ...), video frames and their soundtrack come from PyAV
in file order, so an hour-long input never sits in memory. Images are read
whole with Pillow. `-` reads stdin (spooled to a temporary file, since the
format sniffers need to seek) or writes stdout.
"""
from __future__ import annotations

import math
import os
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import numpy as np

from nc.errors import FormatError, MediaError, OutputWarning, UsageError
from nc.media.facts import LOUD_PEAK, MAX_IMAGE_PIXELS, MAX_SAR_TERM, AudioFacts, ImageFacts, MediaFacts, VideoFacts

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".ppm", ".pgm"}
VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".y4m"}
AUDIO_BLOCK = 1 << 16  # samples per block read from audio files
VIDEO_BLOCK = 8  # frames per block


@dataclass
class MediaSource:
    """An opened input: the facts of each track, and a generator of (track, block)."""

    facts: list[MediaFacts]
    blocks: Callable[[], Iterator[tuple[int, np.ndarray]]]
    seconds: float | None = None  # for progress bars


@contextmanager
def local_path(path: str):
    """A real file path for `path`, spooling stdin to a temporary file for '-'."""
    if path != "-":
        if not os.path.exists(path):
            raise MediaError(f"{path}: no such file")
        if not os.path.isfile(path):
            raise MediaError(f"{path}: not a regular file")
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="nc-stdin-") as tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp)
        tmp.flush()
        if not tmp.tell():
            raise MediaError("stdin: no input")
        try:
            yield tmp.name
        except MediaError as e:  # name the input as the user gave it, not the spool file
            raise MediaError(str(e).replace(tmp.name, "stdin")) from None


def open_media(path: str) -> MediaSource:
    """Sniff and open a media file (by extension first, then by trying each reader)."""
    ext = os.path.splitext(path)[1].lower()
    # the content decides; the extension only says what to try first (a PNG named .wav is an image,
    # not the one-frame video FFmpeg would make of it)
    order = [_open_image, _open_soundfile, _open_av]
    if ext in AUDIO_EXTS:
        order = [_open_soundfile, _open_image, _open_av]
    elif ext in VIDEO_EXTS:
        order = [_open_av]
    elif ext in IMAGE_EXTS:  # an image Pillow cannot read is damaged, not a video in disguise (sound may be)
        order = [lambda p: _open_image(p, damaged_is_an_error=True), _open_soundfile]
    for opener in order:
        try:
            source = opener(path)
        except FormatError as e:  # facts out of range: a damaged or hostile header
            raise MediaError(f"{path}: {e}") from None
        if source is not None:
            return source
    if _is_ncb(path):
        raise MediaError(f"{path}: an .ncb file, which nc decode reads")
    raise MediaError(f"{path}: not a supported audio, image or video file")


def _is_ncb(path: str) -> bool:
    from nc.bitstream.container import SIGNATURE

    try:
        with open(path, "rb") as f:
            return f.read(len(SIGNATURE)) == SIGNATURE
    except OSError:
        return False


_PILLOW_LIMIT = threading.RLock()


@contextmanager
def pillow_within_image_facts():
    """Pillow's decompression-bomb guard at nc's own image limit (ImageFacts: 2^28 pixels) instead of
    Pillow's ~89 M (a warning) and ~179 M (an error): nc checks sizes itself, before allocating."""
    from PIL import Image

    with _PILLOW_LIMIT:  # Pillow's limit is process-wide: one image at a time changes and restores it
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2  # Pillow refuses over twice this, and warns over it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def _open_image(path: str, damaged_is_an_error: bool = False) -> MediaSource | None:
    """The image, or None if Pillow cannot read it (or, with damaged_is_an_error, knows the format but
    cannot decode it: then a MediaError). The size is checked before the pixels are allocated."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with pillow_within_image_facts():
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            raise MediaError(f"{path}: the image has over {MAX_IMAGE_PIXELS} pixels, nc's limit") from None
        except (UnidentifiedImageError, OSError, ValueError):
            return None
        with im:
            ImageFacts(im.width, im.height, "RGB").validate()
            # keeping the first alone would lose the rest without a word; a camera's MPO JPEG is one photo
            # (its other frames are previews and depth maps), read as its first
            if getattr(im, "n_frames", 1) > 1 and im.format != "MPO":
                raise MediaError(f"{path}: the image has {im.n_frames} frames (animated or pages); nc codes one "
                                 f"image: make it a video (ffmpeg -i {os.path.basename(path)} out.mp4) or one still")
            try:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # upright, as viewers show it (phone photos)
                array = _pixels(_in_srgb(im))
            except (OSError, ValueError, SyntaxError, EOFError) as e:
                if damaged_is_an_error:
                    raise MediaError(f"{path}: the image is truncated or damaged ({e})") from None
                return None
    array = array[:, :, None] if array.ndim == 2 else array
    facts = ImageFacts(array.shape[1], array.shape[0], {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]).validate()
    return MediaSource([facts], lambda: iter([(0, array)]), 0.0)


def _in_srgb(im):
    """The image in sRGB, which every codec and output here assumes, when it carries another colour
    profile (a phone's Display P3, a camera's Adobe RGB): its profile was dropped, so its colours shifted.
    An unreadable profile leaves the pixels as they are."""
    import io

    profile = im.info.get("icc_profile")
    if not profile or im.mode not in ("RGB", "RGBA"):
        return im
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if ImageCms.getProfileDescription(source).strip().lower().startswith("srgb"):
            return im
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode=im.mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im


def _pixels(im) -> np.ndarray:
    """8-bit L, RGB or RGBA pixels; deeper greyscale keeps its top 8 bits (convert() would clip it)."""
    if im.mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(im).astype(np.int64)
        bits = 16 if im.mode.startswith("I;16") or wide.max(initial=0) < 65536 else 32
        return np.clip(wide >> (bits - 8), 0, 255).astype(np.uint8)
    if im.mode == "F":  # float pixels: [0, 1] when they fit it (convert() would take them as 0-255)
        floats = np.nan_to_num(np.asarray(im, np.float64))
        scale = 255.0 if floats.size and floats.max() <= 1.0 else 1.0
        return np.clip(np.rint(floats * scale), 0, 255).astype(np.uint8)
    alpha = im.mode in ("LA", "La", "PA", "RGBa") or "transparency" in im.info  # not LAB's a* band
    return np.asarray(im.convert("RGBA" if alpha else "RGB"))


def _open_soundfile(path: str) -> MediaSource | None:
    import soundfile as sf

    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    facts = AudioFacts(int(info.samplerate), int(info.channels))

    def blocks():
        try:
            for block in sf.blocks(path, blocksize=AUDIO_BLOCK, dtype="float32", always_2d=True):
                yield 0, block
        except (sf.LibsndfileError, RuntimeError) as e:
            raise MediaError(f"{path}: read error: {e}") from None

    return MediaSource([facts], blocks, info.frames / max(info.samplerate, 1))


def _open_av(path: str) -> MediaSource | None:
    import av

    try:
        with av.open(path) as container:
            video = _picture_stream(container)
            audio = next(iter(container.streams.audio), None)
            if video is not None and not (video.codec_context.width and video.codec_context.height):
                video = None  # FFmpeg guessed a stream in something that holds no pictures
            if video is None and audio is None:
                return None
            facts, seconds, turns = [], container.duration / 1e6 if container.duration else None, 0
            if video is not None:
                rate = Fraction(video.average_rate or video.guessed_rate or 25).limit_denominator(100_000)
                width, height = video.codec_context.width, video.codec_context.height
                VideoFacts(width, height, rate.numerator, rate.denominator).validate()  # before a frame is decoded
                turns = _quarter_turns(container, video)
                sar = _sample_aspect_ratio(video)
                sar = 1 / sar if turns % 2 else sar  # turned upright, a wide pixel stands tall
                facts.append(VideoFacts(*((height, width) if turns % 2 else (width, height)),
                                        rate.numerator, rate.denominator, sar.numerator, sar.denominator))
            if audio is not None:
                facts.append(AudioFacts(audio.codec_context.sample_rate, audio.codec_context.channels).validate())
    except (av.FFmpegError, OSError, ValueError):
        return None
    fps = facts[0].fps if video is not None else None
    origin = _common_origin(_start(video), _start(audio), fps)
    return MediaSource(facts, lambda: _av_blocks(path, fps, audio is not None, origin, turns), seconds)


def _quarter_turns(container, video) -> int:
    """Counter-clockwise quarter turns that show the video upright, from its first frame's display matrix
    (a phone's portrait video is stored landscape with a rotation), as players apply it."""
    import av

    try:
        frame = next(container.decode(video), None)
    except av.FFmpegError:  # the reading proper says what is wrong with the file
        return 0
    return round((getattr(frame, "rotation", 0) or 0) / 90) % 4 if frame is not None else 0


def _sample_aspect_ratio(video) -> Fraction:
    """The shape of the video's pixels as players show them (the container's, else the codec's, as
    FFmpeg guesses it); 1 where none is said, or one beyond what facts hold."""
    sar = video.sample_aspect_ratio
    if not sar or sar <= 0:
        return Fraction(1)
    sar = Fraction(sar).limit_denominator(MAX_SAR_TERM)
    return sar if sar.numerator <= MAX_SAR_TERM else Fraction(1)


def _picture_stream(container):
    """The first video stream that is a video: an audio file's cover art is a one-picture "video" stream."""
    import av

    return next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)


def _start(stream) -> Fraction | None:
    """A stream's first presentation time in seconds, exactly, as the container gives it (edit lists applied)."""
    if stream is None or stream.start_time is None or not stream.time_base:
        return None
    return stream.start_time * Fraction(stream.time_base)


def _common_origin(video: Fraction | None, audio: Fraction | None, fps: Fraction) -> float | None:
    """The time both tracks are placed from, so that they keep the sync the file gives them: the video's
    start, moved back by the whole frames the sound starts before it (the first frame is held over
    them); sound that starts less than a frame before that (an AAC encoder's priming) is trimmed, so
    that the frame count stays. None when a start is unknown: each track then starts at its first."""
    if video is None or audio is None:
        return None
    return float(video - math.floor(max(0, video - audio) * fps) / fps)  # exact: 1.16 - 1.0 is 4 frames, not 3.99


MAX_HOLD_SECONDS = 10.0  # the longest a frame is held or a hole in the sound filled when reading a file


class _ConstantRate:
    """Frames at their timestamps -> frames at a constant rate, as FFmpeg's fps filter makes them: a frame
    shown longer than one period is repeated, one shown shorter is dropped, so a variable-frame-rate video
    (a phone's) keeps its duration and its sync with the sound. Frames without a time follow one another;
    a jump of over MAX_HOLD_SECONDS is a discontinuity (a damaged or crafted timestamp), not held; a
    shorter jump back (a splice) drops the frames until their times catch up, as FFmpeg's filter does."""

    def __init__(self, fps: Fraction, origin: float | None = None):
        self.fps, self.first, self.current, self.count, self.frames_in = fps, origin, None, 0, 0

    def push(self, frame: np.ndarray, time: float | None) -> Iterator[np.ndarray]:
        self.frames_in += 1
        own = self.count + (self.current is not None)  # the slot right after the current frame's
        # the rate is the average one, so the frames out keep near the frames in: many gaps just under
        # MAX_HOLD_SECONDS (a crafted file) must not make millions of copies either
        allowed = 2 * self.frames_in + MAX_HOLD_SECONDS * self.fps
        if time is not None and (self.first is None or abs(time - self.first - own / self.fps) > MAX_HOLD_SECONDS
                                 or (time - self.first) * self.fps > allowed):
            self.first = time - own / self.fps  # times count from here
        slot = own if time is None else round((time - self.first) * self.fps)
        held = self.current if self.current is not None else frame  # the first frame is shown from the origin
        while self.count < slot:  # the current frame lasts until this one's slot
            self.count += 1
            yield held
        self.current = frame  # a frame whose slot is already filled replaces the one before it (dropped)

    def flush(self) -> Iterator[np.ndarray]:
        if self.current is not None:
            self.count += 1
            yield self.current
        self.current = None


class _SoundTimeline:
    """Sound placed by its timestamps from the origin: a hole (a capture's dropout, sound that starts
    after the video) becomes silence, and sound before the origin or overlapping what came before is
    dropped. The start is placed exactly; later, drift within TOLERANCE (timestamps' rounding) passes,
    and a jump of over MAX_HOLD_SECONDS is a discontinuity, not filled."""

    TOLERANCE = 0.02  # seconds

    def __init__(self, rate: int, channels: int, origin: float | None):
        self.rate, self.channels, self.origin, self.placed, self.started = rate, channels, origin, 0, False
        self.received = 0  # samples the file gave

    def place(self, samples: np.ndarray, time: float | None) -> Iterator[np.ndarray]:
        self.received += len(samples)
        if time is not None and self.origin is None:
            self.origin = time
        off = 0 if time is None else round((time - self.origin) * self.rate) - self.placed
        # one hole of MAX_HOLD_SECONDS at most, and silence in all of at most twice the sound given (+ one
        # hole): many holes just under the limit (a crafted file) must not make hours of it either
        too_much = self.placed + off > 2 * self.received + MAX_HOLD_SECONDS * self.rate
        if time is not None and (abs(off) > MAX_HOLD_SECONDS * self.rate or too_much):
            self.origin, off = time - self.placed / self.rate, 0  # times count from here
        slack = int(self.TOLERANCE * self.rate) if self.started else 0
        self.started = True
        if off > slack:
            for at in range(0, off, 1 << 16):
                silence = np.zeros((min(1 << 16, off - at), self.channels), np.float32)
                self.placed += len(silence)
                yield silence
        elif off < -slack:
            samples = samples[min(-off, len(samples)):]
        if len(samples):
            self.placed += len(samples)
            yield samples


def _av_blocks(path: str, fps: Fraction | None, has_audio: bool, origin: float | None = None,
               turns: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Decode frames in file order: video (RGB uint8, at the constant rate `fps`) as track 0, audio
    (float32) as the next, both placed by their timestamps from `origin` (see _common_origin)."""
    import av

    audio_track = 1 if fps is not None else 0
    pending: list[np.ndarray] = []
    frames = _ConstantRate(fps, origin) if fps is not None else None
    sound = None
    try:
        with av.open(path) as container:
            streams = [s for s in (_picture_stream(container) if fps is not None else None,
                                   next(iter(container.streams.audio), None)) if s is not None]
            resampler = None
            for packet in container.demux(streams):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        for shown in frames.push(np.rot90(frame.to_ndarray(format="rgb24"), turns), frame.time):
                            pending.append(shown)
                            if len(pending) >= VIDEO_BLOCK:
                                yield 0, np.stack(pending)
                                pending = []
                    else:
                        if resampler is None:
                            resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=frame.sample_rate)
                            sound = _SoundTimeline(frame.sample_rate, len(frame.layout.channels), origin)
                        for block in sound.place(_samples(resampler.resample(frame)), frame.time):
                            yield audio_track, block
            pending += list(frames.flush()) if frames is not None else []
            if pending:
                yield 0, np.stack(pending)
            if resampler is not None:
                for block in sound.place(_samples(resampler.resample(None)), None):
                    yield audio_track, block
    except av.FFmpegError as e:
        raise MediaError(f"{path}: decode error: {e}") from None


def _samples(frames) -> np.ndarray:
    """A resampler's packed float frames as one (samples, channels) array."""
    arrays = [f.to_ndarray().reshape(-1, len(f.layout.channels)) for f in frames]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays) if arrays else np.zeros((0, 1), np.float32)


# ---------------------------------------------------------------- writing


STDOUT_NAMES = {"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"}


def refuse_a_terminal(path: str) -> None:
    """Binary output for stdout when stdout is a terminal (`nc encode x.wav -` typed as is) is refused."""
    if path not in STDOUT_NAMES:
        return
    try:
        terminal = os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # a replaced or closed stdout (pytest, an embedding app)
        terminal = False
    if terminal:
        raise UsageError("the output is binary and stdout is a terminal: redirect it (> out) or pipe it")


class OutputFile:
    """An output that nobody sees half-written: it goes to a temporary file (`temp`, mode 0o600), which
    `commit()` puts where `path` leads and `discard()` drops. A failed job never leaves half a file, nor
    destroys the one that was there.

    Where `path` leads: "-" or /dev/stdout is stdout; a symlink is followed (the link stays and its
    target gets the output); a device, FIFO or descriptor (/dev/null, a named pipe, /dev/fd/3) gets the
    finished bytes written into it rather than being replaced by a file. A file that replaces another
    keeps its permission bits; a new one gets what the umask leaves of 0o666, as open() would give it.
    """

    def __init__(self, path: str, suffix: str):
        self.path, self.mode = path, None
        refuse_a_terminal(path)
        try:
            st = None if path in STDOUT_NAMES else os.stat(path)  # (follows /proc's links to pipes too)
        except FileNotFoundError:  # a new file, or a dangling link: its target is made
            st = None
        except OSError as e:
            raise MediaError(f"cannot write {path}: {e.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise MediaError(f"cannot write {path}: it is a directory")
        real = os.path.realpath(path)
        self.replaces = path not in STDOUT_NAMES and (st is None or stat.S_ISREG(st.st_mode)) \
            and not real.startswith("/proc/")  # a descriptor's file is written through, not renamed
        self.target = None if path in STDOUT_NAMES else real if self.replaces else path
        if self.replaces:
            self.mode = stat.S_IMODE(st.st_mode) & 0o777 if st is not None else 0o666 & ~_umask()
        folder = os.path.dirname(real) if self.replaces else tempfile.gettempdir()
        if not os.path.isdir(folder):
            raise MediaError(f"cannot write {path}: no such directory {folder}")
        try:
            self.temp = _new_file(folder, suffix)
        except OSError as e:
            raise MediaError(f"cannot write {path}: {e.strerror}") from None

    def commit(self) -> None:
        try:
            if self.replaces:
                try:
                    os.chmod(self.temp, self.mode)
                except OSError:  # a file system without permission bits: the file still counts
                    pass
                os.replace(self.temp, self.target)
                return
            with open(self.temp, "rb") as f:
                if self.target is None:
                    shutil.copyfileobj(f, sys.stdout.buffer)
                    sys.stdout.buffer.flush()
                else:
                    with open(self.target, "wb") as out:
                        shutil.copyfileobj(f, out)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise MediaError(f"cannot write {self.path}: {e.strerror}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        if os.path.lexists(self.temp):
            os.unlink(self.temp)


def _new_file(folder: str, suffix: str) -> str:
    """A new empty file, mode 0o600, in `folder` with a hidden random name."""
    fd, name = tempfile.mkstemp(prefix=".nc-", suffix=suffix, dir=folder)
    os.close(fd)
    return name


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


class MediaSink:
    """Writes decoded tracks to one output file, chosen by its extension (or `fmt`), through an
    `OutputFile`: the file appears on `close()`, and `abort()` leaves what was there."""

    def __init__(self, path: str, facts: list[MediaFacts], fmt: str | None = None):
        self.path, self.facts = path, facts
        ext = "." + fmt.lower().lstrip(".") if fmt else os.path.splitext(path)[1].lower()
        writer = _writer_for([f.modality for f in facts], ext, path)
        if isinstance(facts[0], ImageFacts):
            _check_image_format(facts[0].mode, ext, path)
        self._out = OutputFile(path, ext)  # the writers pick the format from the temporary file's extension too
        try:
            self._writer = writer(self._out.temp, facts, ext)
        except BaseException:
            self._out.discard()
            raise
        self.written = [0] * len(facts)  # blocks written per track
        self.clipped, self.peak = 0, 0.0  # sound samples beyond full scale, which every audio format here clips

    def write(self, track: int, block: np.ndarray) -> None:
        if isinstance(self.facts[track], AudioFacts) and len(block):
            over = np.abs(block) > 1.0
            if over.any():
                self.clipped, self.peak = self.clipped + int(over.sum()), max(self.peak, float(np.abs(block).max()))
        with self._named_as_the_user_named_it():
            self._writer.write(track, block)
        self.written[track] += 1

    def close(self) -> None:
        try:
            with self._named_as_the_user_named_it():
                self._writer.close()
        except BaseException:
            self._out.discard()
            raise
        self._out.commit()
        if self.peak > LOUD_PEAK:  # a lossy codec's small overshoots on loud sound are normal and inaudible
            warnings.warn(f"{self.path}: {self.clipped} sound samples above full scale (peak {self.peak:.2f}, "
                          f"{20 * math.log10(self.peak):+.1f} dBFS) were clipped to it; nc.decode gives them unclipped",
                          OutputWarning)

    @contextmanager
    def _named_as_the_user_named_it(self):
        """A writer's error names the file it writes, the hidden temporary one: say the output's name."""
        try:
            yield
        except MediaError as e:
            raise MediaError(str(e).replace(str(self._out.temp), self.path)) from None

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the decode already failed; its error is the one to report
            pass
        finally:
            self._out.discard()


def _writer_for(modalities: list[str], ext: str, path: str):
    """The file writer class for these tracks and this extension, or a UsageError saying what works."""
    if not ext or ext == ".":
        raise UsageError(f"{path}: give the output an extension (or --format) to choose its format")
    if "video" in modalities:
        if ext not in _VIDEO_OUT:
            raise UsageError(f"cannot write video to {ext!r}; use one of {', '.join(sorted(_VIDEO_OUT))}")
        return _VideoFileWriter
    if modalities == ["audio"]:
        if ext not in AUDIO_EXTS:
            raise UsageError(f"cannot write audio to {ext!r}; use one of {', '.join(sorted(AUDIO_EXTS))}")
        return _AudioFileWriter
    if modalities == ["image"]:
        if ext not in IMAGE_EXTS:
            raise UsageError(f"cannot write an image to {ext!r}; use one of {', '.join(sorted(IMAGE_EXTS))}")
        return _ImageFileWriter
    raise UsageError(f"cannot write tracks {modalities} to one file")


NO_ALPHA = {".jpg": "JPEG", ".jpeg": "JPEG", ".ppm": "PPM", ".pgm": "PGM", ".bmp": "BMP (as Pillow writes it)",
            ".gif": "GIF"}
#: how decoded images are saved where Pillow's defaults would code them lossily a second time
IMAGE_SAVE_OPTIONS = {".webp": {"lossless": True, "exact": True}, ".jpg": {"quality": 95}, ".jpeg": {"quality": 95},
                      ".avif": {"quality": 95}}


def _check_image_format(mode: str, ext: str, path: str) -> None:
    """Refuse a format that would lose part of the image (Pillow drops alpha or writes colour into .pgm)."""
    if mode == "RGBA" and ext in NO_ALPHA:
        raise UsageError(f"{path}: {NO_ALPHA[ext]} has no alpha channel and the image is RGBA; "
                         f"write .png, .webp, .tif or .avif")
    if mode != "L" and ext == ".pgm":
        raise UsageError(f"{path}: a .pgm is greyscale and the image is {mode}; write .ppm or .png")


class _AudioFileWriter:
    def __init__(self, path: str, facts: list[AudioFacts], ext: str):
        import soundfile as sf

        facts = facts[0]
        try:
            subtype = "PCM_16" if ext in (".wav", ".flac", ".aiff", ".aif") else None
            self._f = sf.SoundFile(path, "w", facts.sample_rate, facts.channels, subtype=subtype,
                                   format=_SF_FORMAT.get(ext))
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise MediaError(f"cannot write {path}: {e}") from None

    def write(self, track: int, block: np.ndarray) -> None:
        self._f.write(np.clip(block, -1.0, 1.0))

    def close(self) -> None:
        self._f.close()


class _ImageFileWriter:
    def __init__(self, path: str, facts: list[ImageFacts], ext: str):
        self.path, self.facts, self.options = path, facts[0], IMAGE_SAVE_OPTIONS.get(ext, {})

    def write(self, track: int, block: np.ndarray) -> None:
        from PIL import Image

        pixels = block[:, :, 0] if self.facts.mode == "L" else block
        try:
            Image.fromarray(np.ascontiguousarray(pixels), self.facts.mode).save(self.path, **self.options)
        except (OSError, ValueError, KeyError) as e:
            raise MediaError(f"cannot write {self.path}: {e}") from None

    def close(self) -> None:
        pass


_SF_FORMAT = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".aiff": "AIFF", ".aif": "AIFF",
              ".au": "AU"}
# extension -> (video codec, pixel format, options, audio codec)
_VIDEO_OUT = {
    ".mp4": ("libx264", "yuv420p", {"crf": "12", "preset": "fast"}, "aac"),
    ".mov": ("libx264", "yuv420p", {"crf": "12", "preset": "fast"}, "aac"),
    ".mkv": ("ffv1", "bgr0", {}, "flac"),  # lossless: what nc decoded, exactly
    ".webm": ("libvpx-vp9", "yuv420p", {"crf": "15", "b": "0"}, "libopus"),
}


SMPTE_170M, LIMITED_RANGE = 6, 1  # FFmpeg's AVCOL_SPC/PRI/TRC_SMPTE170M (BT.601) and AVCOL_RANGE_MPEG


#: FFmpeg's named channel layouts (Vorbis / Opus order); "3c"-style ones fail in libopus
CHANNEL_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
# what a video file's sound may have: FLAC, AAC and libopus all take these; 7.1 fails in PyAV's muxing
_AUDIO_LAYOUTS = {n: CHANNEL_LAYOUTS[n] for n in range(1, 8)}


class _VideoFileWriter:
    """Muxes a video track (and optional audio track) with PyAV."""

    def __init__(self, path: str, facts: list[MediaFacts], ext: str):
        import av

        vcodec, pix_fmt, options, acodec = _VIDEO_OUT[ext]
        for f in facts:
            if isinstance(f, AudioFacts) and f.channels not in _AUDIO_LAYOUTS:
                raise MediaError(f"a {ext} file holds sound of 1 to {len(_AUDIO_LAYOUTS)} channels, not {f.channels}: "
                                 f"nc.decode gives every track as arrays")
        self._out = av.open(path, "w")
        self._facts = facts
        self._streams, self._pts, self._resamplers = {}, {}, {}
        for track, f in enumerate(facts):
            if isinstance(f, VideoFacts):
                s = self._out.add_stream(vcodec, rate=f.fps, options=options)
                even = pix_fmt == "yuv420p"
                s.width, s.height, s.pix_fmt = f.width + (f.width & even), f.height + (f.height & even), pix_fmt
                if (s.width, s.height) != (f.width, f.height):
                    warnings.warn(f"a {ext} file's 4:2:0 video needs even sides: {f.width}x{f.height} is written as "
                                  f"{s.width}x{s.height} (its edge repeated); .mkv keeps it exact", OutputWarning)
                if f.sar != 1:
                    self._keep_aspect(s, f, ext)
                if pix_fmt.startswith("yuv"):  # swscale converts RGB with BT.601, limited range: say so, or
                    cc = s.codec_context      # players take untagged HD as BT.709 and shift its colours
                    cc.colorspace = cc.color_primaries = cc.color_trc = SMPTE_170M
                    cc.color_range = LIMITED_RANGE
            else:
                s = self._out.add_stream(acodec, rate=f.sample_rate if acodec != "libopus" else 48000)
                s.time_base = Fraction(1, s.rate)
                s.layout = _AUDIO_LAYOUTS[f.channels]
                self._resamplers[track] = av.AudioResampler(format=s.format.name, layout=s.layout, rate=s.rate)
            self._streams[track] = s
            self._pts[track] = 0

    @staticmethod
    def _keep_aspect(stream, facts: VideoFacts, ext: str) -> None:
        """Anamorphic video: .mp4 and .mov keep its pixels' shape; PyAV cannot set the one Matroska
        (.mkv, .webm) reads, the stream's, so there players show it squeezed: say so."""
        if ext in (".mp4", ".mov"):
            stream.codec_context.sample_aspect_ratio = facts.sar
            return
        shown = max(1, round(facts.width * facts.sar))
        warnings.warn(f"a {ext} file does not keep this video's sample aspect ratio {facts.sar_num}:{facts.sar_den}: "
                      f"players show {facts.width}x{facts.height}, not {shown}x{facts.height}; .mp4 keeps it",
                      OutputWarning)

    def write(self, track: int, block: np.ndarray) -> None:
        import av

        s = self._streams[track]
        if s.type == "video":
            for frame in block:
                padded = np.pad(frame, ((0, s.height - frame.shape[0]), (0, s.width - frame.shape[1]), (0, 0)), "edge")
                vf = av.VideoFrame.from_ndarray(padded, format="rgb24")
                vf.pts = self._pts[track]
                self._pts[track] += 1
                self._out.mux(s.encode(vf))
            return
        block = np.ascontiguousarray(np.clip(block, -1, 1).T, dtype=np.float32)
        af = av.AudioFrame.from_ndarray(block, format="fltp", layout=s.layout.name)
        af.sample_rate = self._facts[track].sample_rate
        self._mux_audio(track, self._resamplers[track].resample(af))

    def _mux_audio(self, track: int, frames) -> None:
        """Stamp resampled frames with a running sample count (containers refuse missing pts)."""
        s = self._streams[track]
        for rf in frames:
            rf.pts, rf.time_base = self._pts[track], s.time_base
            self._pts[track] += rf.samples
            self._out.mux(s.encode(rf))

    def close(self) -> None:
        for track, s in self._streams.items():
            if s.type == "audio":
                self._mux_audio(track, self._resamplers[track].resample(None))
            self._out.mux(s.encode(None))
        self._out.close()
