"""The error hierarchy and the exit codes the command line maps them to."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of ``svdh-run`` (also in the README)."""

    OK = 0
    UNEXPECTED = 1
    INPUT = 2
    BUNDLE = 3
    NODE_DOWN = 4  # svdh-run status: the PACS node is not running


class SvdhError(Exception):
    """Base class of every expected failure; the message is one readable line."""

    exit_code: ExitCode = ExitCode.UNEXPECTED


class InputError(SvdhError):
    """An input image cannot be read or scored (bad file, unsupported content)."""

    exit_code = ExitCode.INPUT


class BundleError(SvdhError):
    """A model bundle is missing, malformed, or fails its checksums."""

    exit_code = ExitCode.BUNDLE


class BackendError(SvdhError):
    """An inference backend failed to load or run a model."""

    exit_code = ExitCode.BUNDLE


class OutputError(SvdhError):
    """Results cannot be written (a full disk, a folder made read-only during the run): the run stops, and
    what was written before stays valid for a rerun to resume from."""

    exit_code = ExitCode.UNEXPECTED


def install_hint(extra: str, folder: str = "runtime") -> str:
    """The command that installs an optional part, as the README gives it (from the repository root)."""
    return f"pip install './{folder}[{extra}]' (from the svdh repository)"


class MissingDependencyError(SvdhError):
    """An optional package needed for the requested feature is not installed."""

    exit_code = ExitCode.UNEXPECTED
