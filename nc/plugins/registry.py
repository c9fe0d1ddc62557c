"""The codec registry: nc's own codecs plus every plugin found through entry points.

A broken plugin never takes the others down: its failure is recorded as a
one-line problem (shown by `nc codecs`, and named in the error when someone
asks for one of its codecs) and loading goes on.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import re
from dataclasses import dataclass, field

import pluggy

from nc.codecs.base import Codec, CodecDescriptor, RatePoint, is_near, parse_rate
from nc.errors import NCError, UnknownCodecError, UnknownCodecRequest, UsageError, one_line
from nc.plugins import hookspecs

ENTRY_POINT_GROUP = "nc.plugins"
BUILTIN = "nc"  # the plugin name of nc's own codecs
#: comma-separated plugin names to skip, like pytest's `-p no:NAME`
BLOCK_ENV = "NC_DISABLE_PLUGINS"


@dataclass
class Registry:
    codecs: dict[str, Codec] = field(default_factory=dict)
    provider: dict[str, str] = field(default_factory=dict)  # codec id -> plugin name
    problems: list[str] = field(default_factory=list)
    #: codec id -> the plugins that each register it (none of them is used: which one wrote a file?)
    contested: dict[str, list[str]] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)  # plugins NC_DISABLE_PLUGINS switched off

    def get(self, codec_id: str, requested: bool = False) -> Codec:
        """The codec of this id; `requested`: the user named it (a missing one is then a usage error)."""
        if codec_id in self.codecs:
            return self.codecs[codec_id]
        if codec_id in self.contested:
            names = " and ".join(repr(p) for p in self.contested[codec_id])
            raise UnknownCodecError(f"codec {codec_id!r} is registered by plugins {names}, so nc uses neither; "
                                    f"switch one off with {BLOCK_ENV}=NAME or uninstall it")
        modality = codec_id.split("/")[0]
        same = [c for c in self.codecs if c.startswith(modality + "/")] or list(self.codecs)
        known = ", ".join(sorted(same)) or "none"
        off = f"; {BLOCK_ENV} switched off {', '.join(sorted(self.disabled))}" if self.disabled else ""
        meant = [c for c in self.codecs if "/" not in codec_id and c.split("/", 1)[1] == codec_id.lower()]
        guess = f"; did you mean {' or '.join(sorted(meant))}?" if meant else ""
        # a name nothing explains is a typo (exit 2); a failed or switched-off plugin is a failure (exit 1)
        typo = requested and not self._relevant_problems(codec_id) and not self.disabled
        raise (UnknownCodecRequest if typo else UnknownCodecError)(
            f"codec {codec_id!r} is not installed{guess}; installed: {known}{off}{self._hint(codec_id)}")

    def default(self, modality: str, bitrate=None, quality=None) -> Codec:
        """The highest-ranked codec for a modality (ties: alphabetical id) among those offering the
        requested rate within 10 %, ranked by the point the request lands on; among all codecs
        when none offers it (its resolve then explains)."""
        candidates = sorted((c for c in self.codecs.values() if c.descriptor.modality == modality),
                            key=lambda c: (-c.descriptor.rank, c.descriptor.id))
        if not candidates:
            raise UnknownCodecError(f"no {modality} codec is installed{self._hint()}")
        if bitrate is None and quality is None:
            return candidates[0]
        offers = [(point, c) for c in candidates if (point := _offered_point(c, bitrate, quality))]
        if not offers:
            try:
                candidates[0].descriptor.resolve(bitrate, quality)  # its nearest point, if near enough
            except UsageError:
                if bitrate is not None and not parse_rate(bitrate, modality)[0] > 0:  # (unreadable: raises)
                    raise  # a rate that cannot be read, or is not positive, is said so, not listed against
                rates = "; ".join(f"{c.descriptor.id} {c.descriptor.describe_rates()}" for c in candidates)
                asked = bitrate if bitrate is not None else f"quality {quality}"
                raise UsageError(f"no installed {modality} codec offers {asked}: {rates}") from None
            return candidates[0]
        best = min(offers, key=lambda pc: (-_rank_at(pc[0], pc[1]), pc[1].descriptor.id))
        return best[1]

    def _hint(self, codec_id: str | None = None) -> str:
        """The plugin problems that may explain a missing codec: those naming it, and plugins that failed
        to load or register (they may have held it); the others are counted, not listed."""
        relevant = self.problems if codec_id is None else self._relevant_problems(codec_id)
        others = len(self.problems) - len(relevant)
        parts = relevant + ([f"{others} other plugin problem{'s' * (others > 1)}: `nc codecs` lists them"]
                            if others else [])
        return f" ({'; '.join(parts)})" if parts else ""

    def _relevant_problems(self, codec_id: str) -> list[str]:
        """The problems that may explain a missing codec (nc's own are about its built-in codecs' weights)."""
        return [p for p in self.problems
                if codec_id in p or "failed to" in p or p.startswith(f"plugin {BUILTIN!r}")]

    def descriptors(self) -> list[CodecDescriptor]:
        return sorted((c.descriptor for c in self.codecs.values()), key=lambda d: d.id)

    def add(self, codec: object, plugin: str) -> None:
        if isinstance(codec, NCError):  # a codec the plugin could not build, and why
            self.problems.append(f"plugin {plugin!r}: {codec}")
            return
        descriptor = getattr(codec, "descriptor", None)
        if not isinstance(codec, Codec):
            self.problems.append(f"plugin {plugin!r} registered {codec!r}, which is not an nc Codec")
            return
        if not isinstance(descriptor, CodecDescriptor):
            self.problems.append(f"plugin {plugin!r} registered a {type(codec).__name__} whose `descriptor` is "
                                 f"{type(descriptor).__name__}, not a CodecDescriptor")
            return
        codec_id, first = descriptor.id, self.provider.get(descriptor.id)
        if first == plugin:
            self.problems.append(f"plugin {plugin!r} registers codec {codec_id!r} twice; the first is kept")
        elif first == BUILTIN:  # nc's own ids are nc's: files name them
            self.problems.append(f"plugin {plugin!r} registers codec {codec_id!r}, which is nc's own; ignored")
        elif codec_id in self.contested or first is not None:
            # two implementations of one id: whichever nc picked, files from the other would decode wrong
            self.contested.setdefault(codec_id, [first] if first else []).append(plugin)
            self.codecs.pop(codec_id, None)
            self.provider.pop(codec_id, None)
            self.problems.append(f"codec {codec_id!r} is registered by plugins "
                                 f"{' and '.join(map(repr, self.contested[codec_id]))}; nc uses neither")
        else:
            self.codecs[codec_id] = codec
            self.provider[codec_id] = plugin


#: what a plugin may raise at import or registration without taking nc down: any exception, and
#: SystemExit (a module that calls sys.exit when its dependency is missing); not KeyboardInterrupt
PLUGIN_FAILURES = (Exception, SystemExit)


def load_registry(use_entry_points: bool = True) -> Registry:
    from nc.codecs import builtin

    registry = Registry()
    blocked = {_normalized(n) for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}
    manager = pluggy.PluginManager("nc")
    manager.add_hookspecs(hookspecs)
    if BUILTIN in blocked:  # nc's own codecs can be switched off like any plugin's
        registry.disabled.add(BUILTIN)
    else:
        manager.register(builtin, name=BUILTIN)
    if use_entry_points:
        _register_entry_points(manager, registry, blocked)
    for unknown in sorted(blocked - registry.disabled):
        registry.problems.append(f"{BLOCK_ENV} names {unknown!r}, which is no installed plugin")
    # nc's own first, then by plugin name: the order pluggy calls hooks in (tryfirst, trylast,
    # registration) is the plugins' to choose, and must not decide which codec gets an id
    impls = sorted(manager.hook.nc_register_codecs.get_hookimpls(),
                   key=lambda impl: (impl.plugin_name != BUILTIN, impl.plugin_name))
    for impl in impls:
        try:
            codecs = list(impl.function())
        except PLUGIN_FAILURES as e:  # a plugin's bug must not hide the other codecs
            registry.problems.append(f"plugin {impl.plugin_name!r} failed to register codecs: {one_line(e)}")
            continue
        for codec in codecs:
            registry.add(codec, impl.plugin_name)
    return registry


def _register_entry_points(manager: pluggy.PluginManager, registry: Registry, blocked: set[str]) -> None:
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        names = {_normalized(ep.name)} | ({_normalized(ep.dist.name)} if ep.dist is not None else set())
        if blocked & names:  # the entry point's name or its distribution's (nc-classical)
            registry.disabled |= blocked & names
            continue
        if manager.has_plugin(ep.name) or ep.name == BUILTIN:
            registry.problems.append(f"plugin {ep.name!r} ({ep.value}) was skipped: that name is already registered")
            continue
        try:
            module = ep.load()
            manager.register(module, name=ep.name)
        except pluggy.PluginValidationError as e:  # its lines say what is wrong with the hook
            registry.problems.append(f"plugin {ep.name!r} ({ep.value}) failed to load: "
                                     + "; ".join(line.strip() for line in str(e).splitlines() if line.strip()))
            continue
        except PLUGIN_FAILURES as e:
            registry.problems.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {one_line(e)}")
            continue
        registry.problems += _unknown_hooks(manager, ep.name, module)


def _normalized(name: str) -> str:
    """A plugin or distribution name as PEP 503 compares them: nc_classical, NC-Classical = nc-classical."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _unknown_hooks(manager: pluggy.PluginManager, name: str, module: object) -> list[str]:
    """What a plugin meant as hooks but nc will never call: a marked function nc has no spec for (a
    typo such as `nc_register_codec`), or a hook-named function without `@hookimpl`."""
    problems = []
    for caller in manager.get_hookcallers(manager.get_plugin(name)) or []:
        if not caller.has_spec():
            problems.append(f"plugin {name!r} implements {caller.name!r}, which is not an nc hook "
                            f"(nc's: {', '.join(_hook_names())})")
    for hook in _hook_names():
        function = getattr(module, hook, None)
        if callable(function) and manager.parse_hookimpl_opts(module, hook) is None:
            problems.append(f"plugin {name!r} defines {hook!r} without @nc.plugins.hookimpl, so nc never calls it")
    return problems


def _hook_names() -> list[str]:
    return sorted(n for n in vars(hookspecs) if n.startswith("nc_"))


@functools.lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return load_registry()


def _offered_point(codec: Codec, bitrate, quality) -> RatePoint | None:
    """The codec's point for this request if it is the rate asked for (within 10 %), not merely
    its nearest one; a quality request is offered by any codec that accepts it."""
    try:
        point = codec.descriptor.resolve(bitrate, quality)
    except UsageError:
        return None
    if quality is not None:
        return point
    return point if is_near(point, parse_rate(bitrate, codec.descriptor.modality)[0]) else None


def _rank_at(point: RatePoint, codec: Codec) -> int:
    return codec.descriptor.rank if point.rank is None else point.rank


def find_codec(codec_id: str | None, modality: str, bitrate=None, quality=None) -> Codec:
    """The codec a user asked for (checked against the modality), or the default for it: the
    highest-ranked one that offers the rate asked for (within 10 %), so `--bitrate 64k` falls to
    Opus while `--bitrate 6k` gets the neural codec; if none does, the highest-ranked."""
    if codec_id is None:
        return registry().default(modality, bitrate, quality)
    codec = registry().get(codec_id, requested=True)
    if codec.descriptor.modality != modality:
        kind = codec.descriptor.modality
        sound = " (a video's sound takes --audio-codec)" if (kind, modality) == ("audio", "video") else ""
        raise UsageError(f"{codec_id} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} codec; the input is {modality}"
                         f"{sound}")
    return codec
