"""Errors a user can act on: one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input (file, parameter, model folder). The CLI prints it as one line and exits 2."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
