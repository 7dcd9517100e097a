"""The table ``push-config --group`` shows while the group's devices answer: one row per
device and a progress bar of those that have answered.

On a terminal it is redrawn in place as answers arrive; into a file or a pipe only the
final table is written. It draws with ``rich``, as the other views do (``rolloutview``,
``fleetview``): the command line creates it and hands it to ``pushconfig.push_group``,
which knows it only as its ``GroupDisplay``, and the daemon never loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from gateway import wire

if TYPE_CHECKING:
    from gateway.operator.pushconfig import Answer

STYLES = {wire.ConfigStatus.APPLIED: "green", wire.ConfigStatus.REJECTED: "red",
          wire.ConfigStatus.ROLLED_BACK: "yellow", "silent": "red"}


class GroupView:
    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out, highlight=False)
        self._live = Live(console=self._console, auto_refresh=False, redirect_stdout=False,
                          redirect_stderr=False)

    def __enter__(self) -> GroupView:
        self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._live.stop()
        if not self._console.is_terminal:  # a file gets the table once, unterminated
            self._console.line()

    def show(self, answers: Mapping[str, Answer | None], final: bool = False) -> None:
        """Redraw; ``final``: those that have not answered are silent."""
        table = Table()
        table.add_column("device")
        table.add_column("outcome")
        for device, got in sorted(answers.items()):
            if got is None:
                outcome = Text("silent" if final else "waiting",
                               style=STYLES["silent"] if final else "dim")
            else:
                outcome = Text(str(got), style=STYLES.get(got.status, ""))
            table.add_row(device, outcome)
        answered = sum(got is not None for got in answers.values())
        progress = Table.grid(padding=(0, 1))
        progress.add_row(ProgressBar(total=len(answers), completed=answered, width=40),
                         Text(f"{answered}/{len(answers)} answered"))
        self._live.update(Group(table, progress), refresh=True)
