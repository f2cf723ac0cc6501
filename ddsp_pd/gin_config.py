"""Read a ddsp ``operative_config-0.gin`` into plain Python values.

The ddsp library itself registers its classes with gin before parsing; we only need the
bound values, so the file is tokenised with gin's own parser and every configurable
reference (``@synths.Harmonic()``) is kept as a small :class:`GinReference` instead of
being resolved. Macros (``%batch_size``) are resolved when the file defines them.
"""

from __future__ import annotations

import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gin import config_parser

from ddsp_pd.errors import CheckpointError

__all__ = [
    "GinMacro",
    "GinReference",
    "has_selector",
    "lookup",
    "parse_gin",
    "read_gin",
    "references",
]


@dataclass(frozen=True)
class GinReference:
    """A configurable reference such as ``@synths.Harmonic()`` (evaluate=True)."""

    name: str
    evaluate: bool

    @property
    def short_name(self) -> str:
        """The class or function name without scope or module, e.g. ``Harmonic``."""
        return self.name.rsplit("/", 1)[-1].rsplit(".", 1)[-1]

    def __str__(self) -> str:
        return f"@{self.name}()" if self.evaluate else f"@{self.name}"


@dataclass(frozen=True)
class GinMacro:
    """A macro reference (``%name``) that the file does not define."""

    name: str

    def __str__(self) -> str:
        return f"%{self.name}"


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> Any:
        return GinReference(scoped_configurable_name, bool(evaluate))

    def macro(self, macro_name: str) -> Any:
        return GinMacro(macro_name)


def _resolve(value: Any, macros: dict[str, Any], depth: int = 0) -> Any:
    """Replace macro references by their values, recursively through containers."""
    if depth > 32:
        raise CheckpointError("gin config: macros refer to each other in a cycle")
    if isinstance(value, GinMacro):
        if value.name in macros:
            return _resolve(macros[value.name], macros, depth + 1)
        return value
    if isinstance(value, list):
        return [_resolve(v, macros, depth) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, macros, depth) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, macros, depth) for k, v in value.items()}
    return value


def parse_gin(text: str) -> dict[str, Any]:
    """Parse the text of a gin config into ``{"Selector.param": value}``.

    Macro definitions appear under their own name (``"batch_size": 16``); scoped bindings
    keep their scope (``"train/Harmonic.n_samples"``). ``import`` and ``include`` lines are
    skipped. Raises :class:`CheckpointError` on a syntax error.
    """
    raw: dict[str, Any] = {}
    macros: dict[str, Any] = {}
    try:
        for statement in config_parser.ConfigParser(text, _Delegate()):
            if not isinstance(statement, config_parser.BindingStatement):
                continue  # imports and includes name ddsp modules we never load
            selector = statement.selector
            if statement.scope:
                selector = f"{statement.scope}/{selector}"
            if statement.arg_name:
                raw[f"{selector}.{statement.arg_name}"] = statement.value
            else:
                # `name = value` with no parameter defines a macro.
                macros[selector] = statement.value
                raw[selector] = statement.value
    except (SyntaxError, ValueError, tokenize.TokenError, IndentationError) as exc:
        line = getattr(exc, "lineno", None)
        message = getattr(exc, "msg", None) or exc
        if isinstance(exc, tokenize.TokenError) and len(exc.args) == 2:
            message, (line, _) = exc.args  # ('EOF in multi-line statement', (row, col))
        where = f" (line {line})" if line else ""
        lines = str(message).splitlines()
        detail = lines[0] if lines else type(exc).__name__
        raise CheckpointError(f"gin config is not valid{where}: {detail}") from exc
    return {key: _resolve(value, macros) for key, value in raw.items()}


def read_gin(path: str | Path) -> dict[str, Any]:
    """Read and parse a gin file; a missing or unreadable file raises CheckpointError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CheckpointError(f"gin config not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read gin config {path}: {exc}") from exc
    return parse_gin(text)


def _selector_matches(selector: str, name: str) -> bool:
    """True if a (possibly scoped, module-qualified) selector names ``name``."""
    if "/" in selector:
        return False  # scoped bindings apply only inside their scope
    return selector == name or selector.endswith("." + name)


def lookup(bindings: dict[str, Any], name: str, param: str, default: Any = None) -> Any:
    """The value bound to ``name.param``, matching module-qualified selectors too.

    ``lookup(b, "Harmonic", "sample_rate")`` finds ``Harmonic.sample_rate`` as well as
    ``synths.Harmonic.sample_rate``. Unscoped bindings only.
    """
    for key, value in bindings.items():
        selector, _, arg = key.rpartition(".")
        if arg == param and selector and _selector_matches(selector, name):
            return value
    return default


def has_selector(bindings: dict[str, Any], name: str) -> bool:
    """True if any binding configures ``name`` (a class or function)."""
    for key in bindings:
        selector, _, _ = key.rpartition(".")
        if selector and _selector_matches(selector, name):
            return True
    return False


def references(value: Any) -> list[GinReference]:
    """Every configurable reference inside a (nested) bound value."""
    found: list[GinReference] = []
    if isinstance(value, GinReference):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(references(item))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(references(item))
    return found
