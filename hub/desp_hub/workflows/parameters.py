"""Run parameters checked against the types a notebook declares (`desp_hub.workflows.notebook.Parameter`).

Values arrive as JSON and leave as Python objects: the executor hands them to papermill, which writes each one
into the injected-parameters cell as a Python literal of that value. Nothing here (or there) formats a value into
code, so a string stays a string whatever it contains (`"; import os; os.system('x')` included).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .notebook import Parameter

__all__ = ["ParameterError", "validate"]

MAX_STRING_LENGTH = 100_000


class ParameterError(ValueError):
    """A run parameter is unknown or of the wrong type; `field` names it (`parameters.<name>`)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def validate(declared: Iterable[Parameter], given: Any) -> dict[str, Any]:
    """The given values, type-checked against `declared` (names the caller did not give keep their defaults).

    bool is not int; an int is accepted for a float (and becomes one); `any` takes any JSON value. Raises
    ParameterError naming the first offending field.
    """
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ParameterError("parameters", "parameters must be a JSON object of name: value")
    by_name = {parameter.name: parameter for parameter in declared}
    values: dict[str, Any] = {}
    for name, value in given.items():
        field = f"parameters.{name}"
        parameter = by_name.get(name)
        if parameter is None:
            known = ", ".join(by_name) or "none"
            raise ParameterError(field, f"{name!r} is not a parameter of this workflow (declared: {known})")
        values[name] = _checked(parameter.type, value, field)
    return values


def _checked(type_name: str, value: Any, field: str) -> Any:
    if type_name == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif type_name == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParameterError(field, "must be a finite number")
            return float(value)
    elif type_name == "str":
        if isinstance(value, str):
            _check_text(value, field)
            return value
    elif type_name == "bool":
        if isinstance(value, bool):
            return value
    elif type_name == "list":
        if isinstance(value, list):
            _check_json(value, field)
            return value
    elif type_name == "dict":
        if isinstance(value, dict):
            _check_json(value, field)
            return value
    elif type_name == "any":
        _check_json(value, field)
        return value
    raise ParameterError(field, f"must be of type {type_name}, got {_json_type(value)} {_short(value)}")


def _check_text(text: str, field: str) -> None:
    if len(text) > MAX_STRING_LENGTH:
        raise ParameterError(field, f"is longer than {MAX_STRING_LENGTH} characters")
    if "\x00" in text:
        raise ParameterError(field, "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParameterError(field, "must be valid Unicode") from None


def _check_json(value: Any, field: str) -> None:
    """Nested values must be plain JSON (what the API can receive anyway), with valid text."""
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(field, "must not contain NaN or infinity")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParameterError(field, "object keys must be strings")
            _check_text(key, field)
            _check_json(item, field)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, field)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ParameterError(field, f"must be a JSON value, got {type(value).__name__}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    for python_type, name in ((int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
