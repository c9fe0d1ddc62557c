"""nc's plugin host (pluggy). Plugin authors need `hookimpl` and `nc.codecs.base`."""
import pluggy

hookimpl = pluggy.HookimplMarker("nc")

from nc.plugins.registry import BUILTIN, ENTRY_POINT_GROUP, Registry, find_codec, load_registry, registry  # noqa: E402

__all__ = ["hookimpl", "BUILTIN", "ENTRY_POINT_GROUP", "Registry", "find_codec", "load_registry", "registry"]
