"""Driving many boards at once: one job per board in parallel, each outcome kept apart."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from harness.hil.bridge import SerialBoard

T = TypeVar("T")


@dataclass(slots=True)
class BoardOutcome(Generic[T]):
    """What one board's job returned, or the error it raised."""

    board: SerialBoard
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BoardPool:
    """Many boards at once: one reader thread each, jobs run on one worker thread per board."""

    def __init__(self, boards: Sequence[SerialBoard]) -> None:
        self.boards = list(boards)

    def __iter__(self) -> Iterator[SerialBoard]:
        return iter(self.boards)

    def __len__(self) -> int:
        return len(self.boards)

    def open(self) -> BoardPool:
        opened: list[SerialBoard] = []
        try:
            for board in self.boards:
                opened.append(board.open())
        except BaseException:
            for board in opened:
                board.close()
            raise
        return self

    def close(self) -> None:
        for board in self.boards:
            board.close()

    def __enter__(self) -> BoardPool:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, job: Callable[[SerialBoard], T]) -> list[BoardOutcome[T]]:
        """Run ``job`` on every board in parallel; one board's failure does not stop the rest."""

        def run(board: SerialBoard) -> BoardOutcome[T]:
            try:
                return BoardOutcome(board, value=job(board))
            except Exception as exc:
                return BoardOutcome(board, error=exc)

        if not self.boards:
            return []
        with ThreadPoolExecutor(max_workers=len(self.boards)) as pool:
            return list(pool.map(run, self.boards))
