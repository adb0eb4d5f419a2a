"""Reading spec files (YAML or JSON) with bounds that hold before anything is expanded.

A YAML alias stands for a whole subtree: nine aliases of nine aliases make
a document of a few hundred bytes that expands to hundreds of millions of
values when it is serialised for the API. The file's size, its aliases and
its expanded size are bounded on the composed node graph, before any
Python object is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


class SpecFileError(ValueError):
    """A spec file that cannot be used: unreadable, too large, not valid YAML/JSON, not a mapping.

    ``path`` is the file; ``line`` and ``column`` (1-based) locate a parse error when known.
    """

    def __init__(
        self, message: str, path: Path, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column


MAX_SPEC_BYTES = 1_000_000
MAX_ALIASES = 100
# Values after every alias is expanded: far above any real spec.
MAX_EXPANDED_NODES = 100_000


class SpecTooLarge(yaml.YAMLError):
    """The document is over one of the bounds (it was not expanded)."""


class _BoundedLoader(yaml.SafeLoader):
    """A safe loader that counts aliases while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise SpecTooLarge(f"more than {MAX_ALIASES} aliases")
        return super().compose_node(parent, index)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON spec (JSON when the name ends in ``.json``).

    Raises:
        SpecFileError: unreadable, over the bounds, invalid (with the parser's
            reason, the file name, line and column), or not a mapping.
    """
    path = Path(path)
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}", path) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecFileError(f"{path} is larger than {MAX_SPEC_BYTES} bytes", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecFileError(f"{path} is not UTF-8 text (byte {exc.start})", path) from None
    try:
        data = json.loads(text) if kind == "JSON" else load_bounded_yaml(text)
    except SpecTooLarge as exc:
        raise SpecFileError(f"{path} is refused: {exc}", path) from None
    except json.JSONDecodeError as exc:
        raise _located(path, kind, exc.msg, exc.lineno, exc.colno) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise _located(path, kind, reason, line, column) from None
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{path} is not valid {kind}: {exc}", path) from None
    except RecursionError:
        raise SpecFileError(f"{path} is nested too deeply", path) from None
    if not isinstance(data, dict):
        raise SpecFileError(
            f"{path} must hold a mapping (a study spec), not {type(data).__name__}", path
        )
    return data


def _located(
    path: Path, kind: str, reason: str, line: int | None, column: int | None
) -> SpecFileError:
    where = f"{path}:{line}:{column}" if line is not None else str(path)
    return SpecFileError(f"{where}: not valid {kind}: {reason}", path, line, column)


def load_bounded_yaml(text: str) -> Any:
    """``yaml.safe_load`` of one document, refusing alias bombs before expanding them.

    Raises:
        SpecTooLarge: too many aliases, a recursive alias, or too large once expanded.
        yaml.YAMLError: not valid YAML.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """Nodes in ``root`` with every alias expanded, counted without expanding any.

    Raises:
        SpecTooLarge: over ``MAX_EXPANDED_NODES``, or an alias inside its own anchor.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_EXPANDED_NODES + 1)
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise SpecTooLarge("an alias refers to the node that contains it")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    size = sizes[id(root)]
    if size > MAX_EXPANDED_NODES:
        raise SpecTooLarge(f"it expands to more than {MAX_EXPANDED_NODES} values")
    return size


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
