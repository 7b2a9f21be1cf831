"""Save a matplotlib figure as a PNG atomically (the plots of analysis/ and ablations/ go through here)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from data.atomic import atomic_write  # noqa: E402


def save_png(fig, path: str | Path, dpi: int = 120, **savefig_options) -> Path:
    """Render fig to PNG bytes, close it, and write them to path through a temporary file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig_options)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())
