"""The two lines every figure script needs: a headless matplotlib, and saving a figure (folders made)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed: CI, servers, Colab's background runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi: int = 110) -> None:
    """Lay out and save `fig`. Labels in a script matplotlib's font lacks (a model of Chinese text) are drawn as
    boxes: one line says so, instead of a two-line warning for every missing character."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    missing = []
    for warning in caught:
        glyph = re.match(r"Glyph (\d+) .*missing from", str(warning.message))  # 3.8: "current font"; later: "font(s) NAME"
        if glyph is None:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif chr(int(glyph.group(1))) not in missing:
            missing.append(chr(int(glyph.group(1))))
    if missing:
        print(f"note: {Path(path).name}: matplotlib's font has no glyph for {len(missing)} character(s) "
              f"({' '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}); they are drawn as boxes")
