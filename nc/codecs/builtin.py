"""Registers nc's built-in codecs through the same hook third-party plugins use."""
from nc.plugins import hookimpl


@hookimpl
def nc_register_codecs():
    # The neural codecs (audio/rvq, image/hvae, ...) are added here as they ship trained weights.
    return []
