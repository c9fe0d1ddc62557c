"""The one exception family nc raises for anything a user can cause.

Every failure that comes from input (a file, a request, an installed plugin)
is an `NCError` with a one-line message; the CLI prints that line and exits 1.
Anything else escaping nc is a bug.
"""


class NCError(Exception):
    """Base class: a problem with input, a request or the installation."""


class UsageError(NCError):
    """A request that cannot be honoured as asked (bad option, wrong modality)."""


class MediaError(NCError):
    """An input media file is missing, unreadable or of an unsupported format."""


class FormatError(NCError):
    """A `.ncb` file is not valid: bad magic, unknown critical chunk, bad header."""


class CorruptChunkError(FormatError):
    """One chunk failed its checksum or could not be decoded.

    `chunk_number` counts chunks from 0 in file order, the way `nc info` lists them.
    """

    def __init__(self, message: str, chunk_number: int | None = None):
        super().__init__(message)
        self.chunk_number = chunk_number


class TruncatedError(CorruptChunkError):
    """The file ends inside a chunk or before its closing chunk."""


class UnknownCodecError(NCError):
    """A codec id that no installed plugin provides."""


class UnknownCodecRequest(UnknownCodecError, UsageError):
    """A codec asked for by name (`--codec`) that is not installed: a usage error (exit 2), where a file's
    codec that is not installed is a failure (exit 1)."""


class WeightsMismatchError(NCError):
    """A track was encoded with different weights from the installed ones."""


class PluginError(NCError):
    """A plugin failed to load or registered something invalid."""


class NCWarning(UserWarning):
    """Something the user should know that is no error; the CLI shows it as one `nc: warning:` line."""


class RateWarning(NCWarning):
    """An encoder's output came out far from the bitrate or bpp asked (the input lies outside what it reaches)."""


class InputWarning(NCWarning):
    """The input holds what the codecs are not made for (sound above full scale)."""


class OutputWarning(NCWarning):
    """An output file format cannot hold the media exactly as decoded (a size it pads, for one)."""


def one_line(e: BaseException) -> str:
    """An exception as one line: nc's own errors by message, others prefixed with their type."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if isinstance(e, NCError) else f"{e.__class__.__name__}: {text}".rstrip(": ")
