"""nmt: neural machine translation with the Transformer of "Attention Is All You Need"."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from nmt import Translator` without importing torch for `import nmt` alone."""
    if name == "Translator":
        from nmt.api import Translator

        return Translator
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
