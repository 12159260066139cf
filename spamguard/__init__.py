"""spamguard: SMS spam detection with a frozen BERT backbone and a small trained head.

The public ML API lives in :mod:`spamguard.ml`; nothing here loads a model at import time.
"""

__version__ = "0.1.0"
