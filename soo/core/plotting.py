"""matplotlib for the reports: pyplot with the non-interactive Agg backend, set in this one place.

matplotlib is imported only when a plot is drawn, so importing a report module stays cheap and
works without a display (the reports run on headless machines and in CI).
"""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot`, with the Agg backend selected before pyplot is first imported."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot
