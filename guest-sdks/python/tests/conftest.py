"""Makes the SDK importable as ``wallaroo`` from the source tree, as the build tool does."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
