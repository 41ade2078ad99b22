"""Console scripts, one small module each. Known bad input ends in a one-line error, exit code 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from lightning.fabric.utilities.exceptions import MisconfigurationException

from nmt.checkpoint import CheckpointError
from nmt.config import ConfigError
from nmt.data import DataError
from nmt.tokenizer import TokenizerError

# Noise from library internals that a user cannot act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Validation metrics are computed from all ranks' gathered sentences, so they are already global.
warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('val_.*sync_dist=True.*")

class UsageError(ValueError):
    """A bad command-line value that argparse cannot check by itself."""


USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError, TokenizerError, MisconfigurationException)


def run_cli(prog: str, body: Callable[[], int | None], extra_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run `body`; a user error prints `prog: error: <one line>` and returns 2, Ctrl-C returns 130."""
    try:
        return body() or 0
    except USER_ERRORS + extra_errors as err:
        message = " ".join(str(err).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
