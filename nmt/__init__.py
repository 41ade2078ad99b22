"""nmt: neural machine translation with the Transformer of "Attention Is All You Need"."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`from nmt import Translator, DecodingOptions` without importing torch for `import nmt` alone."""
    if name == "Translator":
        from nmt.api import Translator

        return Translator
    if name == "DecodingOptions":
        from nmt.decoding.options import DecodingOptions

        return DecodingOptions
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
