"""Registers nc's built-in codecs through the same hook third-party plugins use.

A built-in neural codec is registered only when its trained weights ship beside it.
"""
from nc.plugins import hookimpl


@hookimpl
def nc_register_codecs():
    from nc.codecs import rvq

    return [rvq.RvqCodec()] if rvq.WEIGHTS.exists() else []
