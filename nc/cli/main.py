"""The `nc` command. Exit codes: 0 ok, 1 failure (one line on stderr), 2 usage error."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

import nc
from nc.errors import FormatError, MediaError, NCError, NCWarning, UsageError, one_line
from nc.media.files import STDOUT_NAMES, OutputFile, refuse_a_terminal


class OneLineParser(argparse.ArgumentParser):
    """argparse with nc's one-line errors (its own prints the usage first)."""

    def error(self, message: str):
        hint = " (a value starting with '-' goes after '=', e.g. --bitrate=-6k)" \
            if "expected one argument" in message else ""
        self.exit(2, f"nc: error: {message}{hint}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nc", description="Compress audio, images and video into .ncb files.")
    p.add_argument("--version", action="version", version=f"nc {nc.__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    e = sub.add_parser("encode", help="media file -> .ncb")
    e.add_argument("input", help="audio, image or video file ('-' for stdin)")
    e.add_argument("output", help=".ncb file ('-' for stdout)")
    e.add_argument("--codec", help="codec id (see `nc codecs`); default: the best installed for the input")
    rate = e.add_mutually_exclusive_group()
    rate.add_argument("--bitrate", help="e.g. 6k, 1.5kbps, 2M (audio/video) or 0.5bpp (images)")
    rate.add_argument("--quality", type=float, help="codec quality scale (see `nc codecs`)")
    rate.add_argument("--bpp", type=float, metavar="TARGET", help="images: bits per pixel (--bpp 0.5 is --bitrate 0.5bpp)")
    e.add_argument("--effort", type=int, default=0, help="encoding effort: slower, a better trade of bits against quality "
                                                         "(codecs that offer it: see `nc codecs`); default 0")
    e.add_argument("--audio-codec", help="codec for a video's soundtrack")
    e.add_argument("--audio-bitrate", help="bitrate for a video's soundtrack")
    e.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    d = sub.add_parser("decode", help=".ncb -> media file")
    d.add_argument("input", help=".ncb file ('-' for stdin)")
    d.add_argument("output", help="output file; its extension picks the format ('-' for stdout)")
    d.add_argument("--format", help="output format when writing to stdout (wav, flac, png, mkv, mp4, ...)")
    d.add_argument("--ignore-errors", action="store_true",
                   help="step over damaged chunks (gaps become silence / the last good frame)")
    d.add_argument("-q", "--quiet", action="store_true")

    i = sub.add_parser("info", help="describe an .ncb file")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--chunks", action="store_true", help="list every chunk")

    sub.add_parser("codecs", help="list installed codecs and their rates")

    t = sub.add_parser("tokens", help="audio, image or video file -> discrete codes (.npy: audio channels x stages x "
                                      "frames, int16 for audio/rvq, int64 for audio/fsq; image/vqgan stages x "
                                      "rows x columns, int16; video/bsqvit (video or image) tubelets x rows x "
                                      "columns x 4-bit sub-codes, uint8)")
    t.add_argument("input")
    t.add_argument("-o", "--output", required=True, help=".npy file of the codes, or .npz: the codes with "
                                                            "their codec, media facts and length")
    t.add_argument("--codec", help="a codec that exposes tokens (default: audio/rvq, image/vqgan or video/bsqvit, "
                                    "by the input's kind)")
    t.add_argument("--bitrate", help="rate point (sets the number of stages)")
    t.add_argument("--quality", type=float, help="quality (image/vqgan: the number of stages, 1-4)")

    k = sub.add_parser("detokenize", help="codes (.npy, or .npz from `nc tokens`) -> audio, image or video file")
    k.add_argument("input", help=".npy or .npz made by `nc tokens` (an .npz records the codec, rate and size)")
    k.add_argument("output", help="audio file (.wav, .flac, ...) or, for image codecs, .png")
    k.add_argument("--codec", help="the codec that made the tokens (default: what an .npz records; a .npy of "
                                    "audio tokens: audio/rvq)")
    k.add_argument("--sample-rate", type=int, help="(default: what an .npz records, else 16000)")
    k.add_argument("--fps", type=int, help="frame rate of a video written from video tokens (default: what an .npz "
                                           "records, else 25)")

    sub.add_parser("train", help="train a neural codec (see `nc train --help`)", add_help=False)
    return p


#: trainer module per codec (`nc train CODEC --help` gives its options)
TRAINERS = {"audio/fsq": "nc.train.audio", "audio/rvq": "nc.train.audio", "audio/wavtokenizer": "nc.train.audio",
            "image/hvae": "nc.train.image", "image/vqgan": "nc.train.vqgan",
            "video/bsqvit": "nc.train.bsqvit", "video/wfvae": "nc.train.video"}


def _train(argv: list[str]) -> int:
    import importlib

    codec = next((a for a in argv if a in TRAINERS), None)
    if codec is None:
        listed = ", ".join(TRAINERS)
        if not argv or argv[0] in ("-h", "--help"):
            print(f"usage: nc train CODEC --data FOLDER --out FOLDER [options]\ncodecs: {listed}\n"
                  "`nc train CODEC --help` lists that trainer's options")
            return 0 if argv else 2
        raise UsageError(f"nc train needs one of the codecs {listed}")
    argv = [codec] + [a for a in argv if a != codec]  # the trainers take the codec first
    importlib.import_module(TRAINERS[codec]).main(argv)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a `kill`, a closed terminal): unwound like Ctrl-C, so that no temporary file
    is left behind and the file that was there stays."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, _frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with warnings.catch_warnings(), _signals_unwind():  # both restore the caller's state when main returns
        warnings.showwarning = _show_warning
        return _run(argv)


@contextlib.contextmanager
def _signals_unwind():
    import signal
    import threading

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    # a signal ignored when nc started (`nohup` ignores SIGHUP) stays ignored
    before = {s: signal.signal(s, _on_signal) for s in wanted if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


_python_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """nc's own warnings as one line, like its errors; anybody else's as Python shows them."""
    if issubclass(category, NCWarning):
        print(f"nc: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def _run(argv: list[str]) -> int:
    try:
        if argv[:1] == ["train"]:  # the trainers have their own options
            return _train(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        for name in ("input", "output"):  # Python 3.11's argparse turns `-- --` into [] (a bug of its own)
            if isinstance(getattr(args, name, None), list):
                parser.error(f"the following arguments are required: {name} (a file name, or - )")
        commands = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "codecs": cmd_codecs,
                    "tokens": cmd_tokens, "detokenize": cmd_detokenize}
        return commands[args.command](args)
    except SystemExit as e:  # argparse's (already printed) or a trainer's refusal, said in words
        if isinstance(e.code, str):
            print(f"nc: error: {e.code}", file=sys.stderr)
            return 1
        raise
    except UsageError as e:
        print(f"nc: error: {e}", file=sys.stderr)
        return 2
    except NCError as e:
        print(f"nc: error: {e}", file=sys.stderr)
        return 1
    except Terminated as e:
        print("nc: terminated", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("nc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except MemoryError as e:  # not a bug: this machine has too little for the media (or the file claims too much)
        detail = (str(e).strip().splitlines() or [""])[0]
        print(f"nc: error: out of memory{': ' + detail if detail else ''}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in nc or a plugin: still one line, the traceback on request
        if os.environ.get("NC_DEBUG"):
            raise
        print(f"nc: internal error{_culprit(e)}: {one_line(e)} (set NC_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _culprit(error: BaseException) -> str:
    """' in plugin NAME (its codecs)' when the innermost of the traceback's frames that lie in a plugin's
    package is a third-party plugin's (not nc's own), so that its author, not nc's, hears of the bug."""
    from pathlib import Path

    from nc.plugins import BUILTIN, registry

    try:
        reg = registry()
    except Exception:
        return ""
    places: dict[Path, tuple[str, list[str]]] = {}  # a plugin's package folder, or its one-file module
    modules: dict[Path, list[str]] = {}  # the file each codec's class is in
    for codec_id, codec in reg.codecs.items():
        top = sys.modules.get(type(codec).__module__.split(".")[0])
        if reg.provider[codec_id] != BUILTIN and getattr(top, "__file__", None):
            place = Path(top.__file__)
            place = place.parent if place.name == "__init__.py" else place
            places.setdefault(place, (reg.provider[codec_id], []))[1].append(codec_id)
            own = getattr(sys.modules.get(type(codec).__module__), "__file__", None)
            modules.setdefault(Path(own) if own else place, []).append(codec_id)
    files = []
    tb = error.__traceback__
    while tb is not None:
        files.append(Path(tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    for file in reversed(files):
        for place, (plugin, ids) in places.items():
            if file == place or place in file.parents:
                return f" in plugin {plugin!r} ({', '.join(sorted(modules.get(file, ids)))})"
    return ""


def _status(args, text: str) -> None:
    """Reports go to stderr when the payload goes to stdout."""
    if not args.quiet:
        print(text, file=sys.stderr if args.output in STDOUT_NAMES else sys.stdout)


def _bpp_bitrate(bpp: float) -> str:
    """--bpp 0.3 -> "0.3bpp", the --bitrate it stands for (written out: the rate parser takes no exponents)."""
    if not 0 < bpp < float("inf"):
        raise UsageError(f"--bpp takes a positive number of bits per pixel, not {bpp:g}")
    return f"{bpp:.12f}".rstrip("0").rstrip(".") + "bpp"


def _refuse_overwriting(source: str, output: str) -> None:
    if output != "-" and source != "-" and os.path.isfile(output) \
            and os.path.exists(source) and os.path.samefile(source, output):
        raise UsageError("the output would overwrite the input")


def cmd_encode(args) -> int:
    from nc.api import encode_file

    _refuse_overwriting(args.input, args.output)
    _refuse_media_name(args.output)
    with _output(args.output) as out:
        bitrate = _bpp_bitrate(args.bpp) if args.bpp is not None else args.bitrate
        report = encode_file(args.input, out, codec=args.codec, bitrate=bitrate, quality=args.quality,
                             audio_codec=args.audio_codec, audio_bitrate=args.audio_bitrate, progress=True,
                             effort=args.effort)
    if args.codec is None:  # the codec was chosen among those installed: say what kept any out
        from nc.plugins import registry

        for problem in registry().problems:
            print(f"nc: warning: {problem}", file=sys.stderr)
    tracks = ", ".join(f"{c} @ {r}" for c, r in report.tracks)
    # the whole file's rate (container included); `nc info` gives each track's payload rate
    rate = f", {report.bytes * 8 / report.seconds / 1000:.2f} kbps in all" if report.seconds else \
        f", {report.bytes * 8 / report.pixels:.3f} bpp in all" if report.pixels else ""
    _status(args, f"{args.output}: {report.bytes} bytes{rate} ({tracks})")
    return 0


def _refuse_media_name(path: str) -> None:
    """`nc encode in.wav out.wav` (encode and decode swapped, or a transcode in mind) would replace a
    media file with .ncb bytes; `out/` names a folder."""
    from nc.media.files import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS

    if path in STDOUT_NAMES:
        return
    if path.endswith(("/", os.sep)):
        raise UsageError(f"{path} names a folder; nc encode writes one .ncb file")
    ext = os.path.splitext(path)[1].lower()
    if ext in AUDIO_EXTS | IMAGE_EXTS | VIDEO_EXTS:
        raise UsageError(f"nc encode writes an .ncb file, not {ext}: name the output .ncb (nc decode makes {ext} files)")


@contextlib.contextmanager
def _output(path: str):
    """stdout (streamed), or an OutputFile for `path` that appears only when everything succeeded."""
    if path in STDOUT_NAMES:
        refuse_a_terminal(path)
        yield _Stdout(sys.stdout.buffer)
        return

    out = OutputFile(path, ".ncb.part")
    try:
        with open(out.temp, "wb") as f:
            yield f
        out.commit()
    finally:
        out.discard()


class _Stdout:
    """stdout for the .ncb bytes: a write that fails (a full disk behind a redirect) is one line."""

    def __init__(self, raw):
        self._raw = raw

    def write(self, data) -> int:
        try:
            return self._raw.write(data)
        except BrokenPipeError:  # the reader left: quiet, as for any command in a pipe
            raise
        except OSError as e:
            raise MediaError(f"cannot write to stdout: {e.strerror or e}") from None

    def __getattr__(self, name):
        return getattr(self._raw, name)


def cmd_decode(args) -> int:
    from nc.api import decode_file

    if args.output in STDOUT_NAMES and not args.format:
        raise UsageError("decoding to stdout needs --format (e.g. wav, png, mkv)")
    _refuse_overwriting(args.input, args.output)
    reader = decode_file(args.input, args.output, fmt=args.format, ignore_errors=args.ignore_errors, progress=True)
    for line in reader.damage:
        print(f"nc: warning: {line}", file=sys.stderr)
    _status(args, f"{args.output}: " + "; ".join(_describe_track(t, reader.decoded_seconds(t.index))
                                                 for t in reader.tracks))
    return 0


def cmd_info(args) -> int:
    from nc.bitstream.container import Chunk

    with nc.open(args.input, "rb") as reader:
        chunks = None
        if args.chunks:
            chunks = [
                {"number": c.number, "offset": c.offset, "track": c.track, "start": c.start,
                 "duration": c.duration, "keyframe": c.keyframe, "bytes": len(c.payload)}
                if isinstance(c, Chunk) else {"number": c.number, "offset": c.offset, "damage": c.message}
                for c in reader.container.chunks()
            ]
            reader.refresh_lengths()  # a walk to FINI may have found the lengths the tail did not give
        sizes = reader.container.track_bytes() or [None] * len(reader.tracks)
        info = {"file": args.input, "created_by": reader.created_by,  # a track's bytes: its chunks, framing included
                "tracks": [{**_track_json(t), "bytes": size} for t, size in zip(reader.tracks, sizes)]}
        if chunks is not None:
            info["chunks"] = chunks
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.input}: written by {info['created_by'] or 'unknown'}")
    for t in info["tracks"]:
        length = "length unknown (no index)" if t["length"] is None else f"{t['seconds']:.3f} s" \
            if t["modality"] != "image" else ""
        facts = ", ".join(f"{k}={v}" for k, v in t["facts"].items() if k != "modality")
        print(f"  track {t['index']}: {t['codec']} v{t['codec_version']} @ {t['rate']} | {facts} | {length}"
              f"{_measured_rate(t)}".rstrip(" |"))
    if reader.container.index is None and reader.container.totals is None:
        print("  note: no index at the end of the file: it is truncated, damaged at its end, or read from a "
              "pipe (--chunks reads every chunk)")
    for c in info.get("chunks", []):
        print("  chunk " + ", ".join(f"{k}={v}" for k, v in c.items() if k != "number") + f"  (#{c['number']})")
    return 0


def _measured_rate(t: dict) -> str:
    """', 6.31 kbps of payload' (or bpp for an image) from a track's bytes in the file; '' when unknown."""
    if t.get("bytes") is None:
        return ""
    if t["modality"] == "image":
        return f"{t['bytes'] * 8 / (t['facts']['width'] * t['facts']['height']):.3f} bpp of payload"
    return f", {t['bytes'] * 8 / t['seconds'] / 1000:.2f} kbps of payload" if t["seconds"] else ""


def _track_json(t) -> dict:
    from nc.media.facts import facts_to_json

    return {"index": t.index, "codec": t.codec, "codec_version": t.codec_version, "rate": t.rate.name,
            "weights_sha256": t.weights_sha256, "modality": t.modality, "facts": facts_to_json(t.facts),
            "length": t.length, "seconds": t.seconds}


def _describe_track(t, decoded: float | None = None) -> str:
    """One track as `nc decode` reports it; a truncated file's tracks by what was decoded of them."""
    if t.modality == "image":
        return f"{t.codec} image {t.facts.width}x{t.facts.height}"
    if t.seconds is None:
        return f"{t.codec} {t.modality} {decoded:.2f} s decoded (length unknown)" if decoded else f"{t.codec} {t.modality}"
    return f"{t.codec} {t.modality} {t.seconds:.2f} s"


def cmd_codecs(args) -> int:
    from nc.plugins import registry

    reg = registry()
    for d in reg.descriptors():
        flags = ", ".join(x for x, on in (("streaming", d.streaming), ("deterministic", d.deterministic)) if on)
        efforts = f"  efforts: 0-{d.efforts}" if d.efforts else ""
        print(f"{d.id:<18} v{d.version}  rank {d.rank:<3} [{reg.provider[d.id]}]  rates: {d.describe_rates()}{efforts}")
        print(f"{'':<18} {d.summary}" + (f" ({flags})" if flags else ""))
    for problem in reg.problems:
        print(f"nc: warning: {problem}", file=sys.stderr)
    if not reg.codecs:
        print("no codecs installed", file=sys.stderr)
        return 1
    return 0


def cmd_tokens(args) -> int:
    import numpy as np

    from nc.api import tokens_and_facts

    path = args.output
    written_into = path in STDOUT_NAMES or (os.path.exists(path) and not os.path.isfile(path))  # /dev/null, a FIFO
    if not path.lower().endswith((".npy", ".npz")) and not written_into:
        path += ".npy"  # as np.save names it
    _refuse_overwriting(args.input, path)
    with_facts = path.lower().endswith(".npz")
    out = OutputFile(path, ".npz" if with_facts else ".npy")
    try:
        codes, meta = tokens_and_facts(args.input, codec=args.codec, bitrate=args.bitrate, quality=args.quality)
        if with_facts:  # what `nc detokenize` needs besides the codes: no option to remember, nothing to pickle
            np.savez(out.temp, codes=codes, meta=np.array(json.dumps(meta)))
        else:
            np.save(out.temp, codes)
        out.commit()
    finally:
        out.discard()
    axes = {"image": ("stages", "rows", "columns"), "video": ("tubelets", "rows", "columns", "sub-codes")}.get(
        meta["codec"].split("/")[0], ("channel(s)", "stages", "frames"))
    print(f"{path}: " + " x ".join(f"{n} {a}" for n, a in zip(codes.shape, axes)),
          file=sys.stderr if path in STDOUT_NAMES else sys.stdout)
    return 0


def cmd_detokenize(args) -> int:
    from fractions import Fraction

    from nc.codecs.learned_image import as_mode
    from nc.media.facts import AudioFacts, ImageFacts, VideoFacts
    from nc.media.files import IMAGE_EXTS, VIDEO_EXTS, MediaSink

    _refuse_overwriting(args.input, args.output)
    codes, meta = _read_tokens(args.input)
    if meta is None and args.codec is None and os.path.splitext(args.output)[1].lower() in IMAGE_EXTS | VIDEO_EXTS:
        raise UsageError(f"a .npy does not say which codec made its tokens: add --codec (image/vqgan, video/bsqvit, "
                         f"...), or make an .npz with `nc tokens -o x.npz`, which records it")
    codec = _agreed("--codec", args.codec, meta and meta["codec"], "audio/rvq")
    facts = meta and meta["facts"]
    sample_rate = _agreed("--sample-rate", args.sample_rate, getattr(facts, "sample_rate", None), 16000)
    fps = Fraction(_agreed("--fps", args.fps, getattr(facts, "fps", None), 25))
    if not 1 <= fps <= 1000:
        raise UsageError(f"--fps takes 1 to 1000 frames per second, not {fps}")
    media = nc.detokenize(codes, codec=codec, sample_rate=sample_rate)
    kind = codec.split("/")[0]
    if kind == "video" and (isinstance(facts, ImageFacts) or os.path.splitext(args.output)[1].lower() in IMAGE_EXTS):
        kind, media = "image", media[0]  # the tokens of an image: its first frame
    if facts is not None:  # the media's own size and length, without the codec's padding
        media = media[:facts.height, :facts.width] if kind == "image" else \
            media[:meta["length"], :facts.height, :facts.width] if kind == "video" else media[:meta["length"]]
    if kind == "image":
        mode = "L" if getattr(facts, "mode", None) == "L" else "RGB"  # a grey image's tokens make grey again
        media = as_mode(media, 1) if mode == "L" else media
        out, shown = ImageFacts(media.shape[1], media.shape[0], mode), f"{media.shape[1]}x{media.shape[0]}"
    elif kind == "video":
        sar = getattr(facts, "sar", Fraction(1))  # an anamorphic video's tokens make it anamorphic again
        out = VideoFacts(media.shape[2], media.shape[1], fps.numerator, fps.denominator, sar.numerator, sar.denominator)
        shown = f"{len(media)} frames of {media.shape[2]}x{media.shape[1]}"
    else:
        out, shown = AudioFacts(sample_rate, media.shape[1]), f"{len(media) / sample_rate:.2f} s"
    sink = MediaSink(args.output, [out])
    try:
        sink.write(0, media)
    except BaseException:
        sink.abort()
        raise
    sink.close()
    print(f"{args.output}: {shown}")
    return 0


MAX_TOKENS_BYTES = 1 << 30  # a .npz member is inflated in memory: a small file must not claim gigabytes


def _read_tokens(path: str):
    """(codes, None) from a .npy; (codes, {"codec", "facts" (MediaFacts), "length"}) from `nc tokens`'s .npz."""
    import zipfile

    import numpy as np

    from nc.media.facts import facts_from_json

    try:
        if not zipfile.is_zipfile(path):
            return np.load(path, allow_pickle=False), None
        with zipfile.ZipFile(path) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_TOKENS_BYTES:
                raise NCError(f"cannot read tokens from {path}: it unpacks to over {MAX_TOKENS_BYTES} bytes")
        with np.load(path, allow_pickle=False) as z:
            codes, meta = z["codes"], json.loads(str(z["meta"]))
        meta = {"codec": str(meta["codec"]), "facts": facts_from_json(meta["facts"]), "length": int(meta["length"])}
        if meta["length"] < 1:
            raise ValueError("length")
    except OSError as e:
        raise NCError(f"cannot read tokens from {path}: {e.strerror or 'not a .npy or .npz file'}") from None
    except FormatError as e:  # the facts an .npz records
        raise NCError(f"cannot read tokens from {path}: {e}") from None
    except (ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile):  # numpy's words would suggest pickles
        raise NCError(f"cannot read tokens from {path}: not a .npy of codes or an .npz from `nc tokens`") from None
    return codes, meta


def _agreed(option: str, given, recorded, default):
    """An option's value: what the tokens' file records, unless the option says otherwise (a conflict)."""
    if given is not None and recorded is not None and given != recorded:
        raise UsageError(f"the tokens record {option} {recorded}; {option} {given} contradicts them")
    return given if given is not None else recorded if recorded is not None else default


if __name__ == "__main__":
    sys.exit(main())
