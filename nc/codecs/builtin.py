"""Registers nc's built-in codecs through the same hook third-party plugins use.

A built-in neural codec is registered only when its trained weights ship beside it (or its
NC_*_WEIGHTS variable names a file that exists); without them, asking for it fails like asking
for any codec that is not installed.
"""
from nc.plugins import hookimpl


@hookimpl
def nc_register_codecs():
    from nc.codecs import bsqvit, fsq, hvae, rvq, vqgan, wavtokenizer, wfvae

    shipped = ((rvq.RvqCodec, rvq.WEIGHTS), (fsq.FsqCodec, fsq.WEIGHTS),
               (wavtokenizer.WavTokenizerCodec, wavtokenizer.WEIGHTS), (hvae.HvaeCodec, hvae.WEIGHTS),
               (vqgan.VqganCodec, vqgan.WEIGHTS), (wfvae.WfvaeCodec, wfvae.WEIGHTS),
               (bsqvit.BsqVitCodec, bsqvit.WEIGHTS))
    return [codec() for codec, weights in shipped if weights.exists()]
