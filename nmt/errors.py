"""The errors a user can cause and fix: each carries a one-line message naming the file, line or
option at fault. The command-line tools print them as `prog: error: ...` with exit code 2.

Kept free of heavy imports, so that the command-line tools can catch them without loading torch.
"""


class DataError(ValueError):
    """Bad input data (one-line message naming the file and line)."""


class CheckpointError(RuntimeError):
    """A checkpoint or export that is missing, damaged, unsafe or of another kind."""


class TranslationError(RuntimeError):
    """Decoding cannot go on (e.g. one sentence does not fit in memory)."""


class ConstraintError(TranslationError):
    """One input's constraints cannot be met (`index`: its place in the call, from 0)."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"input {index + 1}: {reason}")
        self.index, self.reason = index, reason


class ExportError(RuntimeError):
    """An export that cannot be made (model type, missing package, unwritable directory)."""
