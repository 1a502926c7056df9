"""Checking a tool call's arguments against the tool's JSON schema, with `jsonschema`.

The model reads what is wrong, so `validate` turns the first problem into one sentence that
names the argument and what was expected (its type, its choices, its bounds, the arguments there
are). `run_tool` is the one entry point a caller needs: validate, then run.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from rockroll.agent.tools.base import Tool, ToolContext, ToolResult, fail
from rockroll.errors import SandboxError

# JSON schema's "integer" admits 3.0; a tool's `range(offset)` does not, so only ints count.
_BASE = jsonschema.Draft202012Validator
_StrictValidator = jsonschema.validators.extend(
    _BASE,
    type_checker=_BASE.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)
_JSON_NAMES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_JSON_NAMES |= {list: "array", dict: "object", type(None): "null"}
# Which problem is told first at one place: the value's own, then the object's, then the rest.
_ORDER = {"type": 0, "enum": 1, "const": 1, "minimum": 2, "exclusiveMinimum": 2, "required": 3}
_ORDER |= {"additionalProperties": 4}
_VALIDATORS: weakref.WeakKeyDictionary[Tool, tuple[dict, Validator]] = weakref.WeakKeyDictionary()


def validate(tool: Tool, args: object) -> str | None:
    """What is wrong with `args` for `tool`, said so the model can fix its call; None if fine."""
    if not isinstance(args, dict):
        return f"{tool.name}: the arguments must be a JSON object, got {_kind(args)}"
    errors = list(_validator(tool).iter_errors(args))
    if not errors:
        return None
    first = min(errors, key=lambda e: _rank(e, tool.parameters))
    return f"{tool.name}: {_message(first)}"


def call_problem(tools: Mapping[str, Tool], name: str, args: object) -> str | None:
    """What is wrong with a call of the tool `name` (no such tool, bad arguments); None if fine."""
    tool = tools.get(name)
    if tool is None:
        return f"unknown tool {name!r}; the tools are: {', '.join(tools)}"
    return validate(tool, args)


def run_tool(tool: Tool, ctx: ToolContext, args: object) -> ToolResult:
    """Validate, then run: a malformed call or a sandbox failure becomes an error result."""
    problem = validate(tool, args)
    if problem:
        return fail(problem, invalid=True)
    assert isinstance(args, dict)
    try:
        return tool.run(ctx, args)
    except (SandboxError, OSError) as exc:
        return fail(f"{tool.name} failed: {exc}")


def _validator(tool: Tool) -> Validator:
    """The tool's validator, built (and its schema checked) once per tool and schema."""
    cached = _VALIDATORS.get(tool)
    if cached is not None and cached[0] is tool.parameters:
        return cached[1]
    try:
        _StrictValidator.check_schema(tool.parameters)
    except jsonschema.SchemaError as exc:
        raise ValueError(
            f"tool {tool.name!r}: its parameters are not a valid JSON schema: {exc.message}"
        ) from None
    validator = _StrictValidator(tool.parameters)
    _VALIDATORS[tool] = (tool.parameters, validator)
    return validator


def _rank(error: ValidationError, schema: dict) -> tuple:
    """Where the problem is, in the schema's order of properties, then which kind it is."""
    steps: list[int] = []
    for step in error.absolute_path:
        if isinstance(step, int):
            steps.append(step)
            schema = schema.get("items", {})
        else:
            names = list(schema.get("properties", {}))
            steps.append(names.index(step) if step in names else len(names))
            schema = schema.get("properties", {}).get(step, {})
    return (*steps, -1, _ORDER.get(str(error.validator), len(_ORDER) + 1))


def _message(error: ValidationError) -> str:
    where = _where(error.absolute_path)
    label = f"argument '{where}'" if where else "the arguments"
    kind, value, bound = error.validator, error.instance, error.validator_value
    shown = json.dumps(value)[:80]
    if kind == "type":
        expected = " or ".join(bound) if isinstance(bound, list) else bound
        return f"{label} must be of type {expected}, got {_kind(value)} {shown}"
    if kind == "enum":
        return f"{label} must be one of {', '.join(map(str, bound))}, got {shown}"
    if kind == "minimum":
        return f"{label} must be at least {bound}, got {value}"
    if kind == "exclusiveMinimum":
        return f"{label} must be greater than {bound}, got {value}"
    props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    if kind == "required":
        name = next(n for n in bound if n not in value)
        return f"missing required argument '{_join(where, name)}' {_describe(props.get(name, {}))}"
    if kind == "additionalProperties":
        name = next(n for n in value if n not in props)
        known = ", ".join(props) or "none"
        return f"unknown argument '{_join(where, name)}'; the arguments are: {known}"
    return f"{label}: {error.message}"


def _where(path: Any) -> str:
    out = ""
    for step in path:
        out = f"{out}[{step}]" if isinstance(step, int) else _join(out, step)
    return out


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _describe(schema: dict) -> str:
    text = f"({schema.get('type', 'any')})"
    return f"{text}: {schema['description']}" if "description" in schema else text
