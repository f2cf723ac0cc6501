"""The error types every layer raises, each with a short machine-readable code.

The CLI prints ``str(error)`` as one line and exits non-zero; the OSC server replies
``/ddsp/error <code> <message>``. Anything not derived from :class:`DdspPdError` is a bug.
"""

from __future__ import annotations


class DdspPdError(Exception):
    """Base class: a problem with the caller's input, reported without a traceback."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(DdspPdError):
    """The input audio or features file is missing, unreadable, empty or silent."""

    code = "input"


class CheckpointError(DdspPdError):
    """A checkpoint directory or zip is missing, corrupt, or of an unsupported era."""

    code = "checkpoint"


class StatisticsError(DdspPdError):
    """``dataset_statistics.pkl`` is unreadable or contains something not allowed."""

    code = "statistics"


class ControlError(DdspPdError):
    """A control value is out of range or of the wrong type."""

    code = "control"


class OutputError(DdspPdError):
    """The output file cannot be written."""

    code = "output"


class CancelledError(DdspPdError):
    """A render was superseded or cancelled before it finished."""

    code = "cancelled"
