"""Registers nc's built-in codecs through the same hook third-party plugins use.

A built-in neural codec is registered only when its trained weights ship beside it (or its
NC_*_WEIGHTS variable names a file that exists); without them, asking for it fails like asking
for any codec that is not installed, and a variable naming a missing file is said in that error.
"""
from nc.errors import PluginError
from nc.plugins import hookimpl


@hookimpl
def nc_register_codecs():
    from nc.codecs import bsqvit, fsq, hvae, rvq, vqgan, wavtokenizer, wfvae

    built = ((rvq, rvq.RvqCodec), (fsq, fsq.FsqCodec), (wavtokenizer, wavtokenizer.WavTokenizerCodec),
             (hvae, hvae.HvaeCodec), (vqgan, vqgan.VqganCodec), (wfvae, wfvae.WfvaeCodec), (bsqvit, bsqvit.BsqVitCodec))
    codecs = []
    for module, codec in built:
        variable = f"NC_{module.__name__.rsplit('.', 1)[1].upper()}_WEIGHTS"
        if module.WEIGHTS.is_file():
            try:
                codecs.append(codec())
            except PluginError as e:  # one codec's bad weights must not take the others with it
                codecs.append(PluginError(f"{variable}: {e}" if module.WEIGHTS != module.SHIPPED_WEIGHTS else str(e)))
        elif module.WEIGHTS != module.SHIPPED_WEIGHTS:  # a variable naming a file that is not there: say so
            what = "a folder, not a weights file" if module.WEIGHTS.is_dir() else "which does not exist"
            codecs.append(PluginError(f"{variable} names {module.WEIGHTS}, {what}"))
    return codecs
