"""Reading the files a user names without trusting them.

Every file the daemon reads (config, sidecar, labels, ONNX metadata, images, models, videos) may be
a FIFO that blocks forever, /dev/zero that never ends, a name that is not UTF-8 (OpenCV's path
readers crash on it), text that is not UTF-8, or a YAML/JSON document built to explode. This module
turns each of those into one short message; callers wrap it in their own ConfigError/ModelError.

- `read_bytes`/`read_text`: regular files only (stat before opening, so a device is never opened;
  O_NONBLOCK so a FIFO swapped in between cannot block), at most `limit` bytes, strict UTF-8.
- `load_yaml`: yaml.SafeLoader that refuses aliases (a 333-byte alias bomb expands to 387 M items;
  no config or sidecar needs them, and bounding the expansion would still let one document cost
  its bound in every place it is used) and nests at most MAX_DEPTH levels.
- `load_json`: json.loads with a size and depth bound, no NaN/Infinity.
Errors are UnsafeFile (an OSError whose strerror is the message, so existing `except OSError`
call sites report it) or ValueError for documents.
"""

from __future__ import annotations

import errno
import json
import os
import stat

import yaml

MAX_YAML_BYTES = 1 << 20         # a config or sidecar is a few KB; inline ImageNet-21k labels ~0.5 MB
MAX_TEXT_BYTES = 4 << 20         # labels files
MAX_JSON_BYTES = 4 << 20         # the spec in ONNX metadata (labels inline)
MAX_DEPTH = 32                   # our documents nest 3 levels; Python's parsers recurse per level

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnsafeFile(OSError):
    """A file we will not read; `strerror` (and str()) is the one-line reason."""

    def __init__(self, message: str):
        super().__init__(errno.EINVAL, message)

    def __str__(self) -> str:
        return self.strerror


def display_path(path: str | os.PathLike) -> str:
    """The path as valid UTF-8 text for logs and JSON: bytes that are not UTF-8 (kept by Python as
    lone surrogates) become \\xNN, so the name stays recognisable and the output stays valid."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def utf8_name(path: str | os.PathLike) -> bool:
    """Whether the file name is valid UTF-8. OpenCV's and onnxruntime's path APIs need it
    (a non-UTF-8 name made cv2.imread/VideoCapture segfault)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _kind(mode: int) -> str | None:
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def check_regular(path: str | os.PathLike) -> os.stat_result:
    """stat() a file that native code will open by name: refuse what is not a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"cannot read it: {exc.strerror or exc}") from None
    except ValueError:                 # a NUL byte in the name
        raise UnsafeFile("the file name holds a NUL byte") from None
    kind = _kind(st.st_mode)
    if kind:
        raise UnsafeFile(f"is {kind}, not a regular file")
    return st


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB" if n >= 1 << 20 else f"{n} bytes"


def read_bytes(path: str | os.PathLike, *, limit: int) -> bytes:
    """A regular file's content, at most `limit` bytes (larger: UnsafeFile). FileNotFoundError passes."""
    check_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"cannot read it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        kind = _kind(st.st_mode)                 # swapped after the stat above?
        if kind:
            raise UnsafeFile(f"is {kind}, not a regular file")
        if st.st_size > limit:                   # refuse without reading it
            raise UnsafeFile(f"is larger than {_size_text(limit)}, too large for this kind of file")
        data = f.read(limit + 1)                 # + 1: a file that grew since fstat is caught too
    if len(data) > limit:
        raise UnsafeFile(f"is larger than {_size_text(limit)}, too large for this kind of file")
    return data


def read_text(path: str | os.PathLike, *, limit: int = MAX_TEXT_BYTES) -> str:
    data = read_bytes(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UnsafeFile(f"is not UTF-8 text (invalid byte on line {line}); save it as UTF-8") from None


# --- YAML ----------------------------------------------------------------------------------------

class BoundedLoader(yaml.SafeLoader):
    """SafeLoader without aliases and with a nesting limit (the composer is recursive)."""

    max_depth = MAX_DEPTH

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here; write the "
                                              "value out", self.peek_event().start_mark)
        if self._depth >= self.max_depth:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {self.max_depth} levels",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> object:
    """One YAML document through BoundedLoader. Errors: yaml.YAMLError (use yaml_problem())."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"larger than {_size_text(MAX_YAML_BYTES)}")
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        raise
    except Exception as exc:
        # A scalar PyYAML's constructor cannot convert: an integer of 5000 decimal digits, a bad date,
        # an empty `!!int` (IndexError inside PyYAML; found by tests/test_hostile_config.py).
        raise yaml.YAMLError(f"a value cannot be read: {_first_line(exc)[:80]}") from None
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line, ' (line L, column C): problem' or ': problem', from any YAMLError."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or _first_line(exc)
    return f"{where}: {problem}"


def load_yaml_file(path: str | os.PathLike, *, limit: int = MAX_YAML_BYTES) -> object:
    """read_text + load_yaml. Raises FileNotFoundError, UnsafeFile, yaml.YAMLError."""
    return load_yaml(read_text(path, limit=limit))


# --- JSON ----------------------------------------------------------------------------------------

def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def load_json(text: str, *, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> object:
    """json.loads with a size and nesting bound; ValueError (one line) for anything else."""
    if len(text) > limit:
        raise ValueError(f"larger than {_size_text(limit)}")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:       # JSONDecodeError, or an integer beyond Python's digit limit
        raise ValueError(_first_line(exc)[:120]) from None
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return data


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


__all__ = ["UnsafeFile", "check_regular", "read_bytes", "read_text", "load_yaml", "load_yaml_file", "load_json",
           "yaml_problem", "display_path", "utf8_name"]
