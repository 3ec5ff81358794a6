"""Bar sources by name: the one place that turns ``--source NAME`` into a :class:`Source`.

``make_source("synthetic", seed=0, delay=0.0, cancel_wait=token.wait)``,
``make_source("files", path="bars/")``; ``"ib"`` is reserved for the Interactive Brokers adapter.
Options a source does not use are ignored when they are unset (``None``) or at their default, so a
caller can pass the same keyword set for every source (``cancel_wait`` is always optional); a set
option that does not apply raises ``InvalidRequest`` naming it, as does an unknown source name
(listing the valid ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from candleflow.errors import InvalidRequest
from candleflow.sources.base import Source

__all__ = ["LOCAL_SOURCES", "SOURCE_NAMES", "make_source"]

#: Accepted source names, in the order they are listed to users.
SOURCE_NAMES: Final = ("synthetic", "files", "ib")
#: Sources that answer without a network or an account: validating a symbol on them is instant.
LOCAL_SOURCES: Final = frozenset({"synthetic", "files"})

# Options every caller may pass, with the value that means "not set".
_NEUTRAL: Final[Mapping[str, object]] = {
    "path": None,
    "seed": 0,
    "delay": 0.0,
    "calendar_tz": None,
}
# Options a source uses if it can and that are otherwise dropped: ``cancel_wait(seconds) -> bool``
# lets a source's waits end early on cancellation.
_HINTS: Final = frozenset({"cancel_wait"})


def _synthetic(options: dict[str, Any]) -> Source:
    from candleflow.sources.synthetic import SyntheticSource

    return SyntheticSource(**options)


def _files(options: dict[str, Any]) -> Source:
    from candleflow.sources.files import FileSource

    path = options.pop("path", None)
    if path in (None, ""):
        raise InvalidRequest("source 'files' needs a path: give --path FILE_OR_DIR")
    return FileSource(path, **options)


def _ib(options: dict[str, Any]) -> Source:
    raise InvalidRequest(
        "source 'ib' is not available yet: use --source synthetic or --source files"
    )


# name → (factory, options the factory accepts)
_FACTORIES: Final[Mapping[str, tuple[Callable[[dict[str, Any]], Source], frozenset[str]]]] = {
    "synthetic": (
        _synthetic,
        frozenset({"seed", "delay", "cancel_wait", "head", "symbols", "unknown", "fail", "now"}),
    ),
    "files": (_files, frozenset({"path", "calendar_tz"})),
    "ib": (_ib, frozenset({"host", "port", "client_id", "timeout"})),
}


def make_source(name: str, **options: Any) -> Source:
    """The source called ``name`` (synthetic, files, ib), built from the options it uses."""
    key = name.strip().lower() if isinstance(name, str) else ""
    entry = _FACTORIES.get(key)
    if entry is None:
        raise InvalidRequest(f"unknown source {name!r}: use one of {', '.join(SOURCE_NAMES)}")
    factory, accepted = entry
    used: dict[str, Any] = {}
    for option, value in options.items():
        if option in accepted:
            if value is not None:
                used[option] = value
        elif option in _HINTS:
            continue
        elif option not in _NEUTRAL:
            raise InvalidRequest(
                f"unknown option {option!r} for source {key!r}: it accepts "
                f"{', '.join(sorted(accepted))}"
            )
        elif value is not None and value != _NEUTRAL[option]:
            raise InvalidRequest(
                f"option {option}={value!r} does not apply to source {key!r}; "
                f"it accepts {', '.join(sorted(accepted))}"
            )
    return factory(used)
