"""Typed errors that say where the problem is: file, record, field and the offending value."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SceneparseError(Exception):
    """Base class of all sceneparse errors."""


@dataclass
class Problem:
    """One problem found in input data. ``record`` is e.g. ``"annotation 17"`` or ``"image 3"``."""

    file: str | None
    record: str | None
    field: str | None
    message: str
    value: Any = None
    repaired: str | None = None  # what lenient mode did about it, if anything

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.record, self.field) if p)
        s = f"{where}: {self.message}" if where else self.message
        if self.value is not None:
            v = repr(self.value)
            s += f" (got {v if len(v) < 120 else v[:117] + '...'})"
        if self.repaired:
            s += f" [repaired: {self.repaired}]"
        return s


class DataError(SceneparseError, ValueError):
    """Invalid input data. Carries the list of :class:`Problem` found (at least one)."""

    def __init__(self, problems: "list[Problem] | Problem | str", *, file: str | None = None):
        if isinstance(problems, str):
            problems = [Problem(file, None, None, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        head = "\n  ".join(str(p) for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} problem(s):\n  {head}{more}")


class FormatError(DataError):
    """A file that does not follow its format (malformed JSON/XML/txt/PNG)."""


class PredictionError(DataError):
    """Malformed predictions handed to evaluation (unknown ids, NaN scores, ...)."""


class CheckpointError(SceneparseError, RuntimeError):
    """A checkpoint that is missing, unreadable or does not fit the model; lists the keys."""

    def __init__(self, message: str, *, missing: list[str] | None = None, unexpected: list[str] | None = None,
                 mismatched: list[str] | None = None, path: str | None = None):
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])
        self.path = path
        parts = [f"{path}: {message}" if path else message]
        for name, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                           ("shape mismatches", self.mismatched)):
            if keys:
                shown = ", ".join(keys[:15]) + (f", ... ({len(keys)} in all)" if len(keys) > 15 else "")
                parts.append(f"{name}: {shown}")
        super().__init__("\n".join(parts))


class ConfigError(SceneparseError, ValueError):
    """Unknown or invalid configuration keys/values."""


class ExportError(SceneparseError, RuntimeError):
    """A model that cannot be exported (to ONNX / TorchScript), or whose exported graph does not
    reproduce the eager model: says which model, which operator or construct, and why."""

    def __init__(self, message: str, *, model: str | None = None, construct: str | None = None):
        self.model = model
        self.construct = construct
        parts = [f"{model}: {message}" if model else message]
        if construct:
            parts.append(f"construct: {construct}")
        super().__init__("\n".join(parts))


@dataclass
class Report:
    """Collects problems without stopping (lenient mode) or stops at the first (strict mode)."""

    strict: bool = False
    problems: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)
        if self.strict and problem.repaired is None:
            raise DataError([problem])

    def __bool__(self) -> bool:
        return bool(self.problems)

    def raise_if_any(self) -> None:
        errors = [p for p in self.problems if p.repaired is None]
        if errors:
            raise DataError(errors)
