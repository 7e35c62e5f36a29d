"""Errors the user caused, each mapped to an exit code.

Exit 2 means "fix your input": systemd's RestartPreventExitStatus=2 stops a restart loop on them.
"""

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A problem with what the user gave us; printed as one line, exit code 2."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """A config file, sidecar or command-line value is wrong. The message names the file and key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.detail = message
        where = ", ".join(part for part in (file, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ModelError(UserError):
    """The model file is missing, broken or does not match its description."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"model {path}: {message}")


class SourceError(UserError):
    """A source could not be opened at all (as opposed to a live source that glitches)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: what a one-line error report needs."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
