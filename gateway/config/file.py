"""Loading the device file: YAML with line numbers, validated into ``Config``.

Errors come back as ``FILE:LINE: dotted.field: message``, with the line of the key
that holds the offending value (or of its parent mapping when a key is missing).

The file may be hostile or broken (it arrives with SIGHUP on a device with little
memory), so the loader is bounded: its length, how deep it nests and how many values it
stands for once aliases are expanded (nine levels of nine aliases would otherwise grow to
gigabytes). Crossing a bound is one more error line, found before the cost is paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config.fields import Location
from gateway.config.models import PUBLIC_KEY_PATTERN, Config, is_key_file, semantic_errors
from gateway.regularfile import read_regular

# A device's file is a few KB and about 150 values; these bounds are far above any real
# one, and a file at them costs a few MB and well under a second to read or refuse.
MAX_CHARS = 1 << 18
MAX_DEPTH = 64
MAX_VALUES = 10_000


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        # A key in the file may hold a line break or a control character: escaped, so
        # that an issue stays one line on a terminal and in the journal.
        return "".join(
            c if c.isprintable() else repr(c)[1:-1] for c in f"{where}:{field} {self.message}"
        )


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(map(str, issues)))
        self.issues = issues


class _Refused(Exception):
    """A bound of the loader crossed, on a 1-based line."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _line_of(mark: object) -> int | None:
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document that nests or expands past the bounds.

    The composer recurses once per level, so the depth bound also keeps it clear of
    Python's recursion limit. Values are counted as they are composed, an alias counting
    for everything it stands for, so an alias bomb is refused on the line that sets it
    off, before the line index or the validator walk the expansion.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._values = 0
        # Values each anchored node stands for. An anchor not in here is still open: an
        # alias to it would make the document contain itself.
        self._anchored: dict[yaml.Node, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = _line_of(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if node not in self._anchored:
                raise _Refused(f"alias *{event.anchor} is inside the value it names", line)
            self._count(self._anchored[node], line)
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line)
        before = self._values
        self._count(1, line)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            self._anchored[node] = self._values - before
        return node

    def _count(self, values: int, line: int | None) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise _Refused(f"more than {MAX_VALUES} values with aliases expanded", line)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A scalar that looks like a date or a number but is none (2024-13-45, an
        # integer of 5,000 digits) makes the constructor raise ValueError.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            reason = str(exc).split(";")[0]
            raise _Refused(f"not a valid {kind}: {reason}", _line_of(node.start_mark)) from exc


class _LineIndex:
    """Maps a location inside the document to the 1-based line it was written on."""

    def __init__(self, root: yaml.Node) -> None:
        self.lines: dict[Location, int] = {}
        self.duplicates: list[tuple[Location, int]] = []
        self._walk(root, ())

    def _walk(self, node: yaml.Node, loc: Location) -> None:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                child = (*loc, key)
                if child in self.lines:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                self.lines[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*loc, index))

    def locate(self, loc: Location) -> tuple[Location, int | None]:
        """Drop the parts of a pydantic location that are not in the file (union tags)."""
        found: Location = ()
        for part in loc:
            if (*found, part) in self.lines:
                found = (*found, part)
            elif part == loc[-1] and isinstance(part, str):
                # A missing key: report it under its parent, on the parent's line.
                return (*found, part), self.lines.get(found)
        return found, self.lines.get(found)


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


_PLAIN_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "finite_number": "must be a finite number",
}


def _message(error: Any) -> str:
    plain = _PLAIN_MESSAGES.get(error["type"])
    return plain or str(error["msg"]).removeprefix("Value error, ")


MAX_KEY_FILE_BYTES = 1024


def key_file_problem(path: Path) -> str | None:
    """Why a trusted key file cannot serve, or None; its key is checked again when loaded."""
    try:
        data = read_regular(path, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        return f"cannot read key file {path}: {exc.strerror or exc}"
    if len(data) > MAX_KEY_FILE_BYTES or not PUBLIC_KEY_PATTERN.fullmatch(
        data.decode("ascii", "replace").strip()
    ):
        return f"key file {path} does not hold a public key (64 hex characters)"
    return None


def _key_file_errors(config: Config) -> list[tuple[Location, str]]:
    errors: list[tuple[Location, str]] = []
    for index, entry in enumerate(config.remote_config.trusted_keys):
        problem = key_file_problem(Path(entry)) if is_key_file(entry) else None
        if problem is not None:
            errors.append((("remote_config", "trusted_keys", index), problem))
    return errors


def _anchored(config: Config, base_dir: Path) -> Config:
    """Relative paths in the file are relative to the file's directory."""
    update: dict[str, object] = {}
    if not config.state_dir.is_absolute():
        update["state_dir"] = base_dir / config.state_dir
    keys = config.remote_config.trusted_keys
    anchored = [str(base_dir / k) if is_key_file(k) else k for k in keys]
    if anchored != keys:
        update["remote_config"] = config.remote_config.model_copy(
            update={"trusted_keys": anchored}
        )
    return config.model_copy(update=update) if update else config


@dataclass(frozen=True)
class Document:
    """A valid device file: its settings as written (for remote layers to go on top of)
    and validated."""

    data: dict[str, Any]
    config: Config


def parse(text: str, file: str, base_dir: Path | None = None) -> Config:
    """Validate YAML text; ``base_dir`` anchors relative paths (``state_dir``, key files)."""
    return parse_document(text, file, base_dir).config


def parse_document(text: str, file: str, base_dir: Path | None = None) -> Document:
    settings = read_settings(text, file)
    return Document(settings.data, validate(settings.data, file, base_dir, settings.index,
                                            settings.issues))


@dataclass(frozen=True)
class Settings:
    """YAML text read as a mapping of settings, not yet validated: where each part was
    written, and what reading found wrong (duplicate keys) for validation to add to."""

    data: dict[str, Any]
    index: _LineIndex
    issues: list[ConfigIssue]

    def line(self, loc: Location) -> int | None:
        return self.index.locate(loc)[1]


def read_settings(text: str, file: str) -> Settings:
    """The one way YAML becomes settings, for a device file and an operator's fragment."""
    if len(text) > MAX_CHARS:
        raise ConfigError([ConfigIssue(file, text.count("\n", 0, MAX_CHARS) + 1, "",
                                       f"refused: longer than {MAX_CHARS} characters")])
    try:
        loader = _BoundedLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError([ConfigIssue(file, exc.line, "", f"refused: {exc.problem}")]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([ConfigIssue(file, line, "", f"YAML syntax error: {problem}")]) from exc
    except yaml.reader.ReaderError as exc:
        # Its own message spans two lines and counts characters rather than lines.
        raise ConfigError([ConfigIssue(file, text.count("\n", 0, exc.position) + 1, "",
                                       f"YAML error: unacceptable character "
                                       f"#x{exc.character:04x}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML error: {exc}")]) from exc
    if root is None or not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError([ConfigIssue(file, line, "", "expected a mapping of settings")])

    index = _LineIndex(root)
    issues = [
        ConfigIssue(file, line, _dotted(loc), "duplicate key") for loc, line in index.duplicates
    ]
    return Settings(data, index, issues)


def validate(
    data: dict[str, Any],
    file: str,
    base_dir: Path | None = None,
    index: _LineIndex | None = None,
    issues: list[ConfigIssue] | None = None,
    *,
    key_files: bool = True,
) -> Config:
    """Validate settings already read: those of a file (with its ``index`` for line
    numbers), or a file's with remote layers on top (no lines to give). ``key_files``
    False leaves trusted key files unread: an operator checking a fragment has not got the
    device's files."""
    issues = list(issues or ())

    def locate(raw: Location) -> tuple[Location, int | None]:
        return index.locate(raw) if index is not None else (raw, None)

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, line = locate(tuple(error["loc"]))
            issues.append(ConfigIssue(file, line, _dotted(loc), _message(error)))
        raise ConfigError(issues) from None
    if base_dir is not None:
        config = _anchored(config, base_dir)
    problems = semantic_errors(config) + (_key_file_errors(config) if key_files else [])
    for raw_loc, message in problems:
        loc, line = locate(raw_loc)
        issues.append(ConfigIssue(file, line, _dotted(loc), message))
    if issues:
        raise ConfigError(issues)
    return config


S = TypeVar("S", bound=BaseModel)


def load_settings(path: Path) -> Settings:
    """A file's settings, read but not validated."""
    return read_settings(_read(path), str(path))


def validate_as(model: type[S], settings: Settings, file: str) -> S:
    """Settings of another file than the device's (the operator's) as ``model``, each
    pydantic error on its line."""
    issues = list(settings.issues)
    try:
        value = model.model_validate(settings.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, line = settings.index.locate(tuple(error["loc"]))
            issues.append(ConfigIssue(file, line, _dotted(loc), _message(error)))
        raise ConfigError(issues) from None
    if issues:
        raise ConfigError(issues)
    return value


def load(path: Path) -> Config:
    return load_document(path).config


def _read(path: Path) -> str:
    try:
        # One character past the bound is enough to refuse a file (or /dev/zero).
        with path.open(encoding="utf-8") as stream:
            return stream.read(MAX_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read: {reason}")]) from exc


def load_document(path: Path) -> Document:
    return parse_document(_read(path), str(path), base_dir=path.resolve().parent)


def state_dir_of(path: Path) -> Path:
    """Only the file's ``state_dir`` (anchored), the rest unjudged: what the firmware
    launcher of the base install needs, which must not refuse a file because a newer
    release takes keys it does not know."""
    data = read_settings(_read(path), str(path)).data
    value = data.get("state_dir", Config.model_fields["state_dir"].default)
    if not isinstance(value, str | Path):
        raise ConfigError([ConfigIssue(str(path), None, "state_dir", "expected a path")])
    return path.resolve().parent / value
