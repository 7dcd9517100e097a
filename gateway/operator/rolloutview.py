"""What ``rollout`` shows: one row per step (eligible, committed, failed, silent, pending,
failure rate, where it stands), redrawn in place on a terminal, and a line per event.

Into a file or a pipe the event lines are written as they happen and the table once, at the
end, followed by the reason a rollout halted or stopped and the devices that count against
it. The command line creates it and hands it to ``rollout.Rollout``, which knows it only as
its ``RolloutDisplay``; only the command line imports it (and so ``rich``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from gateway.operator.rollout import Tally

MAX_LISTED = 20
"""Devices named under a halt; the rest are counted."""

STYLES = {"done": "green", "halted": "bold red", "stopped": "yellow"}


class RolloutView:
    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out, highlight=False)
        self._live = Live(console=self._console, auto_refresh=False, redirect_stdout=False,
                          redirect_stderr=False)
        self._rows: dict[float, tuple[Tally, str]] = {}
        self._ending: list[str] = []

    def __enter__(self) -> RolloutView:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._live.is_started:
            self._live.stop()
            if not self._console.is_terminal:  # a file gets the table once, unterminated
                self._console.line()
        for line in self._ending:
            self._console.print(line, markup=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self._console.print(text, markup=False, soft_wrap=True)

    def show(self, tally: Tally, state: str) -> None:
        if self._rows.get(tally.percent) == (tally, state):
            return
        self._rows[tally.percent] = (tally, state)
        table = Table(title="rollout")
        for column in ("step", "eligible", "committed", "failed", "silent", "pending",
                       "failure rate"):
            table.add_column(column, justify="right")
        table.add_column("state")
        for percent, (row, where) in self._rows.items():
            rate = f"{row.failure_rate:.0%}" if row.judged else "-"
            table.add_row(f"{percent:g} %", str(row.eligible), str(row.committed),
                          str(row.failed), str(row.silent), str(row.pending), rate,
                          Text(where, style=STYLES.get(where, "")))
        if not self._live.is_started:  # the first step's row starts the table
            self._live.start()
        self._live.update(table, refresh=True)

    def stop(self, reason: str, failures: tuple[tuple[str, str], ...] = ()) -> None:
        """Said after the table: why the rollout ends early, and who counted against it."""
        self._ending.append(reason)
        for device, why in failures[:MAX_LISTED]:
            self._ending.append(f"  {device}: {why}")
        if len(failures) > MAX_LISTED:
            self._ending.append(f"  and {len(failures) - MAX_LISTED} more")
