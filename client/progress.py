"""Progress of a long step: a tqdm bar on a terminal, a few plain lines in a log.

A tqdm bar redraws itself many times a second; written to a file or a pipe (``make demo > log``, CI)
each redraw is one more line, thousands per step. :func:`progress_bar` gives a tqdm bar when its
stream is a terminal and otherwise a :class:`StepLines` that prints one line at the start and one each
time another tenth of the total is done (0 %, 10 %, ..., 100 %: at most :data:`LINES_PER_BAR` lines),
or, without a known total, one line at the start and one at the end. Both answer the same calls
(``update``, ``set_postfix_str``, ``write``, ``close``, iteration, ``with``), so a caller does not
know which it has.

Every progress display of the bundle goes through here (training, export, ``ser predict``, the
demo). tqdm is imported only when a bar is drawn on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

#: The most lines one bar prints off a terminal: 0 %, 10 %, ..., 100 %.
LINES_PER_BAR = 11


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class StepLines:
    """A progress display for logs: a line at 0 %, at each further tenth done, and when a sub-step is named.

    A sub-step is named with ``set_postfix_str``; nothing is printed in between.

    Attributes:
        total: steps in all (None: unknown, then a line at the start and one at the end).
        n: steps done so far.
        desc: the label that starts each line.
        unit: what a step is (``clip``, ``step``, ``file``).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, file: TextIO | None = None, disable: bool = False) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = int(initial)
        self.disable = disable
        self._file = file
        self._postfix = ""
        self._t0 = time.monotonic()
        self._tenths_said = -1  # the last tenth a line was printed for
        self._closed = False
        self._say()

    @property
    def file(self) -> TextIO:
        """Where the lines go (read when printing, so a stream swapped after construction is honoured)."""
        return self._file if self._file is not None else sys.stderr

    def _tenths(self) -> int:
        return min(10, (10 * self.n) // self.total) if self.total else 0

    def _say(self, *, final: bool = False) -> None:
        if self.disable:
            return
        if self.total:
            tenths = self._tenths()
            if tenths <= self._tenths_said:
                return
            self._tenths_said = tenths
        elif self._tenths_said >= 0 and not final:
            return
        else:
            self._tenths_said = 0
        self._line()

    def _line(self, postfix: str = "") -> None:
        """``<desc>: <done> <elapsed> s[, <postfix>]``; done: ``40 % (2/5 step)``, or ``500 it`` without a total."""
        done = f"{100 * self.n // self.total:3d} % ({self.n}/{self.total} {self.unit})" if self.total else f"{self.n} {self.unit}"
        tail = f", {postfix}" if postfix else ""
        print(f"{self.desc}: {done} {time.monotonic() - self._t0:.1f} s{tail}", file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done; prints when another tenth is reached."""
        self.n += n
        self._say()

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:  # noqa: ARG002 - tqdm's signature
        """What the step is doing now: a line saying so when it changes (a log shows what a long step is in).

        Callers name sub-steps here (a few per bar), never per item, so these lines stay few.
        """
        if text and text != self._postfix and not self.disable:
            self._line(text)
        self._postfix = text

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print a message line (tqdm's ``write``)."""
        print(text, file=file if file is not None else self.file, flush=True)

    def close(self) -> None:
        """End the display: prints the 100 % (or the count) line if not printed yet."""
        if self._closed:
            return
        self._closed = True
        if self.total is None:
            self._say(final=True)

    def __iter__(self) -> Iterator:
        assert self.iterable is not None, "StepLines was given no iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> StepLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, file: TextIO | None = None, disable: bool = False, leave: bool = True):
    """A tqdm bar on a terminal, else :class:`StepLines` (at most :data:`LINES_PER_BAR` lines).

    Args:
        iterable: what to iterate over (optional; call ``update`` otherwise).
        total: steps in all (default: ``len(iterable)`` where it has one).
        desc: label.
        unit: what one step is.
        initial: steps already done (a resumed run).
        file: the stream (default ``sys.stderr``, as tqdm's); the choice follows whether it is a terminal.
        disable: show nothing.
        leave: on a terminal, keep the finished bar on screen.
    """
    stream = file if file is not None else sys.stderr
    if not disable and is_terminal(stream):
        from tqdm import tqdm  # noqa: PLC0415 - only for a bar actually drawn

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, leave=leave,
                    dynamic_ncols=True)
    return StepLines(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file, disable=disable)
