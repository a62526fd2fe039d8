"""lbp-audit: red flags from low back pain notes, and a guideline audit of lumbar imaging orders."""
__version__ = "0.1.0"


def __getattr__(name: str):
    """`from pipeline import Auditor` imports `pipeline.auditor` (and spaCy) only when asked for."""
    if name in ("Auditor", "Tables", "NoteView"):
        from . import auditor

        return getattr(auditor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
