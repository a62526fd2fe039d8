"""lbp-audit: red flags from low back pain notes, and a guideline audit of lumbar imaging orders."""
__version__ = "0.1.0"
