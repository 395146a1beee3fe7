"""GitHub Actions expressions, evaluated as GitHub documents them, for the `if:` of jobs.

https://docs.github.com/en/actions/reference/workflows-and-actions/expressions: literals
(booleans, null, numbers, 'strings' with '' for a quote), property dereference (`a.b`, `a['b']`;
a missing property is null), the operators `( ) ! < <= > >= == != && ||` in that precedence,
loose equality (operands of different types are compared as numbers: null is 0, a boolean 1 or
0, a string its number, '' 0, anything else NaN; strings compare ignoring case), `&&` and `||`
yielding an operand (falsy: false, 0, '', null, NaN), and the status functions. A job's `if`
without a status function is evaluated as `success() && (...)`
(https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-syntax#jobsjob_idif).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?)|(?P<string>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[()!<>.,\[\]])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)
STATUS = ("success", "failure", "cancelled", "always")


@dataclass(frozen=True)
class Job:
    """A finished (or skipped) job as `needs.<id>` shows it: its result and its outputs."""

    result: str
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """What a job's `if` sees: its needs, the github context, and whether the run was cancelled."""

    needs: Mapping[str, Job]
    github: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    cancelled: bool = False

    def context(self) -> dict[str, Any]:
        needs = {
            name: {"result": job.result, "outputs": dict(job.outputs)} for name, job in self.needs.items()
        }
        return {"needs": needs, "github": dict(self.github), "inputs": dict(self.inputs)}

    def status(self, name: str) -> bool:
        results = [job.result for job in self.needs.values()]
        return {
            "always": True,
            "cancelled": self.cancelled,
            "failure": "failure" in results,
            "success": not self.cancelled and all(r == "success" for r in results),
        }[name]


def job_runs(condition: str | bool | None, run: Run) -> bool:
    """Whether a job with this `if:` runs (a missing `if` is success())."""
    if condition is None:
        return run.status("success")
    text = _unwrap(str(condition)).strip()
    if not any(re.search(rf"\b{name}\s*\(", text) for name in STATUS):
        text = f"success() && ({text})"
    return truthy(evaluate(text, run))


def evaluate(expression: str, run: Run) -> Any:
    """The value of one expression (with or without its ${{ }})."""
    parser = _Parser(_tokens(_unwrap(expression)), run)
    value = parser.expression()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()!r} in {expression!r}")
    return value


def truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (False, 0, "", None)


def equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    if type(left) is type(right) and not isinstance(left, (dict, list)):
        return bool(left == right)
    if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
        return left is right
    return _number(left) == _number(right)  # NaN equals nothing


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if text == "":
        return 0.0
    try:
        return float(text)
    except ValueError:
        return math.nan


def _unwrap(expression: str) -> str:
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        return text[3:-2]
    return text


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = TOKEN.match(text, at)
        if match is None:
            raise ValueError(f"cannot read {text[at:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens


class _Parser:
    """Recursive descent, one method per precedence level, lowest first."""

    def __init__(self, tokens: list[tuple[str, str]], run: Run) -> None:
        self.tokens, self.at, self.run = tokens, 0, run

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise ValueError(f"expected {expected!r}, found {token[1]!r}")
        self.at += 1
        return token

    def expression(self) -> Any:
        return self._binary(("||",), self._and, lambda op, left, right: left if truthy(left) else right)

    def _and(self) -> Any:
        return self._binary(("&&",), self._equality, lambda op, left, right: right if truthy(left) else left)

    def _equality(self) -> Any:
        return self._binary(("==", "!="), self._comparison, lambda op, a, b: equal(a, b) == (op == "=="))

    def _comparison(self) -> Any:
        def compare(op: str, a: Any, b: Any) -> bool:
            if isinstance(a, str) and isinstance(b, str):
                a, b = a.lower(), b.lower()
            else:
                a, b = _number(a), _number(b)
            return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])

        return self._binary(("<", "<=", ">", ">="), self._unary, compare)

    def _binary(
        self, operators: tuple[str, ...], operand: Callable[[], Any], combine: Callable[[str, Any, Any], Any]
    ) -> Any:
        """Left-associative: operand (operator operand)*."""
        value = operand()
        while self.peek() in operators:
            op = self.take()[1]
            value = combine(op, value, operand())
        return value

    def _unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not truthy(self._unary())
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                key: Any = self.take()[1]
            else:
                key = self.expression()
                self.take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def _primary(self) -> Any:
        kind, text = self.take()
        if text == "(":
            value = self.expression()
            self.take(")")
            return value
        if kind == "number":
            return float(text)
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind != "name":
            raise ValueError(f"unexpected {text!r}")
        literals = {"true": True, "false": False, "null": None}
        if text in literals:
            return literals[text]
        if self.peek() == "(":
            return self._call(text)
        return self.run.context().get(text)

    def _call(self, name: str) -> Any:
        self.take("(")
        arguments = []
        while self.peek() != ")":
            arguments.append(self.expression())
            if self.peek() == ",":
                self.take()
        self.take(")")
        if name in STATUS:
            return self.run.status(name)
        if name == "contains":
            haystack, needle = arguments
            if isinstance(haystack, list):
                return any(equal(item, needle) for item in haystack)
            return str(needle).lower() in str(haystack).lower()
        raise ValueError(f"{name}() is not modelled here")
