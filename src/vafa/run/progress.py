"""Progress of attacks on a terminal: a tqdm bar fed by :class:`~vafa.attacks.base.StepEvent` s.

The library reports progress through callbacks (``callback(event) -> bool | None``); this is the
one consumer that draws them as a text bar (the napari plugin draws its own, in the GUI thread).
"""

from __future__ import annotations

import sys

from vafa.attacks.base import StepEvent

__all__ = ["StepBar"]


class StepBar:
    """A tqdm bar with one tick per attack step of every tile batch (on stderr).

    Args:
        title: text before the bar.

    Use as the ``callback`` of an attack, then :meth:`close` it.
    """

    def __init__(self, title: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(desc=title, unit="step", leave=False, file=sys.stderr)

    def __call__(self, event: StepEvent) -> None:
        total = event.total * (event.tiles or 1)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(1)
        postfix = {"dice": f"{event.dice:.3f}"}
        if event.ssim is not None:
            postfix["ssim"] = f"{event.ssim:.3f}"
        if event.tiles and event.tiles > 1:
            postfix["tile"] = f"{event.tile}/{event.tiles}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()

    @staticmethod
    def write(text: str) -> None:
        """Print a line without breaking a running bar."""
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
