"""Progress the library reports (`switchman.learn.Progress`), drawn with Rich: a bar with the count,
elapsed time and time left for counted steps (embedding, folds), a running line for the rest.

    with ProgressBars(console) as progress:
        train_router(table, settings, progress=progress)

Each step keeps its line once done, so the end state shows what took how long; piped into a log,
Rich draws the final state once instead of animating.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

__all__ = ["ProgressBars"]


class _Eta(ProgressColumn):
    """"eta 0:01:05" while a counted step runs; nothing once it is done or when it is not counted."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, min_width=11))

    def render(self, task: Task) -> Text:
        if task.finished or task.total is None or task.time_remaining is None:
            return Text("")
        minutes, seconds = divmod(int(task.time_remaining), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class ProgressBars:
    """A `switchman.learn.Progress` that draws each reported step as a line of a Rich progress display."""

    def __init__(self, console: Console) -> None:
        # Counts and times never shrink: the description takes what is left and is cut first.
        self._display = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=16), MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=9)),
            TimeElapsedColumn(), _Eta(), console=console,
        )
        self._tasks: dict[str, TaskID] = {}
        self._current: TaskID | None = None

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None:
        task = self._tasks.get(message)
        if task is None:
            self._finish_current()
            task = self._tasks[message] = self._display.add_task(message, total=total)
            self._current = task
        self._display.update(task, total=total, completed=done if done is not None else 0)

    def _finish_current(self) -> None:
        if self._current is None:
            return
        total = self._display.tasks[self._current].total
        self._display.update(self._current, total=total or 1, completed=total or 1)

    def __enter__(self) -> Self:
        self._display.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._finish_current()
        self._display.stop()
