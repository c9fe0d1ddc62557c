"""The hooks an nc plugin can implement. Each is declared once, here.

A plugin is a module (or package) with functions marked `@nc.plugins.hookimpl`
and named like the specs below. Third-party plugins are found through the
`nc.plugins` entry-point group::

    [project.entry-points."nc.plugins"]
    myplugin = "my_package"

nc's own codecs are registered by the same hook, from `nc.codecs.builtin`.
"""
import pluggy

hookspec = pluggy.HookspecMarker("nc")


@hookspec
def nc_register_codecs():
    """Return a list of `nc.codecs.base.Codec` instances this plugin provides.

    Called once per process by the codec registry, plugin by plugin, so a plugin
    that raises is reported by name and the other plugins' codecs stay usable.
    Construction must be cheap: load weights when the codec first encodes or decodes.
    In place of a codec it cannot build, a plugin may return an `nc.errors.NCError` saying why:
    `nc codecs` and the "not installed" error show it.
    """
