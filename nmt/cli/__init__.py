"""Console scripts, one small module each. Known bad input ends in a one-line error, exit code 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from nmt.config import ConfigError
from nmt.errors import CheckpointError, DataError, ExportError, TranslationError
from nmt.tokenizer import TokenizerError

# Noise from library internals that a user cannot act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")  # metrics.csv gets every N steps
# nmt-train refuses a run directory that holds a run unless --resume (KeepMetricsOnResume keeps the
# old rows) or --overwrite, and its loaders skip what a resumed checkpoint had seen (exact resume).
warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
# Validation metrics are computed from all ranks' gathered sentences, so they are already global.
# Steps with a non-finite loss return None on purpose; TranslationModule prints its own warning.
warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`.*")
warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('val_.*sync_dist=True.*")

class UsageError(ValueError):
    """A bad command-line value that argparse cannot check by itself."""


USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError, TokenizerError, TranslationError, ExportError)


def user_errors() -> tuple[type[BaseException], ...]:
    """USER_ERRORS, plus Lightning's settings errors once Lightning is loaded (not imported here:
    nmt-translate never needs it)."""
    if "lightning.fabric.utilities.exceptions" in sys.modules:
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        return USER_ERRORS + (MisconfigurationException,)
    return USER_ERRORS


def add_dtype_flag(p) -> None:
    """--dtype, beside --int8 (nmt-translate, nmt-evaluate, nmt-serve); checked by check_precision."""
    from nmt.api import DTYPES

    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="precision of the weights and products (torch: the model cast to it; ctranslate2: its "
                        "compute type); bfloat16/float16 are for GPUs and CPUs with bfloat16 instructions")


def check_precision(args) -> None:
    if args.int8 and args.dtype != "float32":
        raise UsageError(f"--int8 and --dtype {args.dtype} are two precisions: choose one")


def check_device(name: str) -> None:
    """--device: a device torch knows and this machine has."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name}: not a device name (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0 or (device.index or 0) >= available:
            raise UsageError(f"--device {name}: no such CUDA device here ({available} available"
                             f"{'; this torch build has no CUDA' if torch.version.cuda is None else ''})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: only cpu, cuda and mps are supported")


def run_cli(prog: str, body: Callable[[], int | None], extra_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run `body`; a user error prints `prog: error: <one line>` and returns 2, Ctrl-C returns 130."""
    try:
        return body() or 0
    except user_errors() + extra_errors as err:
        message = " ".join(str(err).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
