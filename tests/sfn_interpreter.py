"""A small in-process interpreter for the Amazon States Language subset our state machine uses.

**A stand-in for AWS Step Functions, which cannot run here** (no AWS; moto records executions but
runs nothing; Step Functions Local is not installable offline). It executes exactly the states
and fields forecasting/aws/statemachine.asl.json uses — Task (Resource = a Lambda ARN, called as
the real handler in this process), Map (ItemsPath, MaxConcurrency/MaxConcurrencyPath, an INLINE
ItemProcessor; items run one after another), Pass, Fail (Error/Cause, ErrorPath/CausePath),
Retry (ErrorEquals, MaxAttempts, IntervalSeconds/BackoffRate: recorded, not slept), Catch
(ErrorEquals, ResultPath, Next), ResultPath (null, "$", "$.field") — and refuses any other state
type or field, so the definition cannot quietly use something this interpreter would skip.

Errors follow the service's rules for Lambda tasks: a handler's exception becomes the error
named by its class (errorType) with Cause = {"errorMessage", "errorType"} as a JSON string;
"States.ALL" matches any error, "States.TaskFailed" any but "States.Timeout". What it does not
model: timeouts (TimeoutSeconds is checked for shape only), parallel Map items, payload size
limits, and the service's own retries of Lambda throttling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KNOWN_FIELDS = {
    "Task": {"Type", "Comment", "Resource", "TimeoutSeconds", "Retry", "Catch", "Next", "End", "ResultPath"},
    "Map": {
        "Type",
        "Comment",
        "ItemsPath",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ItemProcessor",
        "ResultPath",
        "Retry",
        "Catch",
        "Next",
        "End",
    },
    "Pass": {"Type", "Comment", "Result", "ResultPath", "Next", "End"},
    "Fail": {"Type", "Comment", "Error", "Cause", "ErrorPath", "CausePath"},
}
RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "JitterStrategy"}
CATCH_FIELDS = {"ErrorEquals", "ResultPath", "Next"}


class ExecutionFailedError(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


class _TaskError(Exception):
    def __init__(self, error: str, cause: str):
        super().__init__(error)
        self.error, self.cause = error, cause


@dataclass
class Execution:
    output: Any = None
    status: str = "RUNNING"
    error: str | None = None
    cause: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # (state, event)


def _path(data: Any, path: str) -> Any:
    """A reference path: "$", "$.a", "$.a.b" (all this definition uses)."""
    if path == "$":
        return data
    if not path.startswith("$."):
        raise ValueError(f"unsupported path {path!r}")
    for part in path[2:].split("."):
        data = data[part]
    return data


def _put(data: Any, path: str | None, result: Any) -> Any:
    """Apply a ResultPath: None discards the result, "$" replaces the input, "$.x" sets a field."""
    if path is None:
        return data
    if path == "$":
        return result
    if not path.startswith("$.") or "." in path[2:]:
        raise ValueError(f"unsupported ResultPath {path!r}")
    out = dict(data)
    out[path[2:]] = result
    return out


def _matches(names: list[str], error: str) -> bool:
    return (
        "States.ALL" in names
        or error in names
        or ("States.TaskFailed" in names and error != "States.Timeout")
    )


class Interpreter:
    """Run a definition whose Task resources map to Python callables ``(event, context) -> dict``."""

    def __init__(self, definition: dict, resources: dict[str, Callable[[dict, Any], Any]]):
        self.definition = definition
        self.resources = resources
        self.calls: list[tuple[str, Any]] = []  # (resource, input) of every invocation, retries included
        self.waits: list[float] = []  # retry intervals the service would have waited

    def run(self, payload: dict) -> Execution:
        ex = Execution()
        try:
            ex.output = self._machine(self.definition, json.loads(json.dumps(payload)), ex)
            ex.status = "SUCCEEDED"
        except ExecutionFailedError as e:
            ex.status, ex.error, ex.cause = "FAILED", e.error, e.cause
        return ex

    def _machine(self, machine: dict, data: Any, ex: Execution) -> Any:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            kind = state["Type"]
            unknown = set(state) - KNOWN_FIELDS.get(kind, set())
            if kind not in KNOWN_FIELDS or unknown:
                raise NotImplementedError(
                    f"state {name}: type {kind} / fields {sorted(unknown)} not interpreted"
                )
            ex.history.append((name, "entered"))
            if kind == "Fail":
                error = (
                    _path(data, state["ErrorPath"])
                    if "ErrorPath" in state
                    else state.get("Error", "States.Fail")
                )
                cause = _path(data, state["CausePath"]) if "CausePath" in state else state.get("Cause", "")
                raise ExecutionFailedError(str(error), str(cause))
            if kind == "Pass":
                data = _put(data, state.get("ResultPath", "$"), state.get("Result", data))
            else:
                try:
                    result = self._with_retry(state, data, ex, name)
                except _TaskError as e:
                    catcher = next(
                        (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], e.error)), None
                    )
                    if catcher is None:
                        raise ExecutionFailedError(e.error, e.cause) from None
                    ex.history.append((name, f"caught {e.error}"))
                    data = _put(data, catcher.get("ResultPath", "$"), {"Error": e.error, "Cause": e.cause})
                    name = catcher["Next"]
                    continue
                data = _put(data, state.get("ResultPath", "$"), result)
            ex.history.append((name, "exited"))
            if state.get("End"):
                return data
            name = state["Next"]

    def _with_retry(self, state: dict, data: Any, ex: Execution, name: str) -> Any:
        attempts: dict[int, int] = {}
        while True:
            try:
                return self._execute(state, data, ex)
            except _TaskError as e:
                for i, r in enumerate(state.get("Retry", [])):
                    if _matches(r["ErrorEquals"], e.error):
                        n = attempts.get(i, 0)
                        if n < r.get("MaxAttempts", 3):
                            attempts[i] = n + 1
                            self.waits.append(r.get("IntervalSeconds", 1) * r.get("BackoffRate", 2.0) ** n)
                            ex.history.append((name, f"retry {n + 1} after {e.error}"))
                            break
                        raise
                else:
                    raise

    def _execute(self, state: dict, data: Any, ex: Execution) -> Any:
        if state["Type"] == "Task":
            fn = self.resources[state["Resource"]]
            self.calls.append((state["Resource"], data))
            try:
                result = fn(json.loads(json.dumps(data)), None)
            except Exception as e:  # as Lambda reports a function error to Step Functions
                name = type(e).__name__
                raise _TaskError(name, json.dumps({"errorMessage": str(e), "errorType": name})) from e
            return json.loads(json.dumps(result))  # results must be JSON, as on the service
        items = _path(data, state["ItemsPath"])
        limit = (
            _path(data, state["MaxConcurrencyPath"])
            if "MaxConcurrencyPath" in state
            else state.get("MaxConcurrency", 0)
        )
        if not isinstance(limit, int) or limit < 0:
            raise _TaskError("States.Runtime", f"MaxConcurrency {limit!r} is not a non-negative integer")
        processor = state["ItemProcessor"]
        out = []
        for item in items:
            try:
                out.append(self._machine(processor, item, ex))
            except ExecutionFailedError as e:  # an item that fails fails the Map state
                raise _TaskError(e.error, e.cause) from None
        return out


def check_definition(definition: dict, placeholders: set[str]) -> list[str]:
    """Structural problems of a definition (empty list = none): dangling Next, unreachable or
    unterminated states, unknown fields, Resources that are not placeholders, malformed Retry/Catch."""
    problems: list[str] = []
    seen_placeholders: set[str] = set()

    def scope(machine: dict, where: str) -> None:
        states = machine.get("States") or {}
        if machine.get("StartAt") not in states:
            problems.append(f"{where}: StartAt {machine.get('StartAt')!r} is not a state")
        reach, todo = set(), [machine.get("StartAt")]
        for name, state in states.items():
            kind = state.get("Type")
            if kind not in KNOWN_FIELDS:
                problems.append(f"{where}.{name}: unknown Type {kind!r}")
                continue
            extra = set(state) - KNOWN_FIELDS[kind]
            if extra:
                problems.append(f"{where}.{name}: unexpected field(s) {sorted(extra)}")
            if kind != "Fail" and bool(state.get("End")) == ("Next" in state):
                problems.append(f"{where}.{name}: needs exactly one of Next or End")
            if "Next" in state and state["Next"] not in states:
                problems.append(f"{where}.{name}: Next {state['Next']!r} is not a state")
            for r in state.get("Retry", []):
                if set(r) - RETRY_FIELDS or not r.get("ErrorEquals"):
                    problems.append(f"{where}.{name}: malformed Retry {r}")
            for c in state.get("Catch", []):
                if set(c) - CATCH_FIELDS or not c.get("ErrorEquals") or c.get("Next") not in states:
                    problems.append(f"{where}.{name}: malformed Catch {c}")
            if kind == "Task":
                res = state.get("Resource", "")
                if not (res.startswith("${") and res.endswith("}")):
                    problems.append(f"{where}.{name}: Resource {res!r} is not a placeholder")
                seen_placeholders.add(res[2:-1])
                if not isinstance(state.get("TimeoutSeconds"), int):
                    problems.append(f"{where}.{name}: Task without an integer TimeoutSeconds")
            if kind == "Map":
                if "ItemsPath" not in state or "ItemProcessor" not in state:
                    problems.append(f"{where}.{name}: Map needs ItemsPath and ItemProcessor")
                else:
                    scope(state["ItemProcessor"], f"{where}.{name}")
        while todo:
            n = todo.pop()
            if n in reach or n not in states:
                continue
            reach.add(n)
            s = states[n]
            todo += [s.get("Next")] + [c.get("Next") for c in s.get("Catch", [])]
        for n in set(states) - reach:
            problems.append(f"{where}.{n}: unreachable")

    scope(definition, "$")
    if seen_placeholders != placeholders:
        problems.append(f"placeholders {sorted(seen_placeholders)} != {sorted(placeholders)}")
    return problems


def substitute(text: str, values: dict[str, str]) -> str:
    """What CDK's definition_substitutions (CloudFormation DefinitionSubstitutions) do: ${Name} → value."""
    for k, v in values.items():
        text = text.replace("${" + k + "}", v)
    if "${" in text:
        raise ValueError("definition has unsubstituted placeholders")
    return text
