"""Published notebooks: read and check an nbformat v4 notebook, hash its content, find its declared parameters.

A version of a workflow is identified by the sha256 of the notebook's *content*: the type and source of every
cell, in order, plus the kernelspec. Outputs, execution counts and other metadata do not count, so re-publishing
the same code after running it in the Lab is no new version.

Parameters follow papermill's convention: the cell tagged `parameters` assigns defaults, one name per
assignment (`year = 2020`, `region: str = "alps"`). Each default must be a Python literal; its type (int, float,
str, bool, list, dict; `None` and non-literal defaults give `any`) is what a run's value is checked against (see
`desp_hub.workflows.parameters`). The cell is never executed here: it is parsed with `ast`.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import nbformat

__all__ = [
    "PARAMETER_TYPES",
    "NotebookError",
    "Parameter",
    "content_hash",
    "declared_parameters",
    "read_notebook",
]

#: Parameter types, by the name they are published under.
PARAMETER_TYPES = ("int", "float", "str", "bool", "list", "dict", "any")
PARAMETERS_TAG = "parameters"
# annotations a parameters cell may use, and the type they declare
_ANNOTATIONS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "list": "list", "dict": "dict",
                "typing.Any": "any", "Any": "any", "object": "any"}  # fmt: skip


class NotebookError(ValueError):
    """The notebook cannot be published; `field` is the request field at fault (`notebook`)."""

    def __init__(self, message: str, field: str = "notebook"):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A declared parameter: its name, type (one of PARAMETER_TYPES) and JSON-representable default."""

    name: str
    type: str
    default: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Parameter:
        return cls(name=data["name"], type=data["type"], default=data.get("default"))


def read_notebook(data: Any) -> nbformat.NotebookNode:
    """An nbformat v4 notebook from a JSON dict (or its text), validated; NotebookError otherwise.

    Older minor versions of v4 are upgraded as nbformat reads them; v3 and older are refused (papermill needs v4).
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError:
            raise NotebookError("the notebook is not valid JSON") from None
    if not isinstance(data, Mapping):
        raise NotebookError("the notebook must be an nbformat v4 JSON object")
    if data.get("nbformat") != 4:
        raise NotebookError(f"only nbformat 4 notebooks can be published, got nbformat {data.get('nbformat')!r}")
    try:
        notebook = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(notebook)
    except (nbformat.ValidationError, ValueError, TypeError, KeyError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NotebookError(f"not a valid nbformat v4 notebook: {message}") from None
    return notebook


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def content_hash(notebook: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the cells' type and source and of the kernelspec."""
    content = {
        "cells": [{"cell_type": cell.get("cell_type"), "source": _source(cell)} for cell in notebook.get("cells", [])],
        "kernelspec": (notebook.get("metadata") or {}).get("kernelspec") or {},
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parameters_cell_index(notebook: Mapping[str, Any]) -> int | None:
    """Index of the first code cell tagged `parameters` (papermill injects values after it), or None."""
    for index, cell in enumerate(notebook.get("cells", [])):
        tags = (cell.get("metadata") or {}).get("tags") or ()
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in tags:
            return index
    return None


def declared_parameters(notebook: Mapping[str, Any]) -> list[Parameter]:
    """The parameters the notebook's `parameters` cell declares, in order ([] without such a cell).

    A name assigned twice keeps its last default (as executing the cell would). A cell that is not valid Python
    is a NotebookError: it would fail every run.
    """
    index = parameters_cell_index(notebook)
    if index is None:
        return []
    source = _source(notebook["cells"][index])
    # IPython magics and shell escapes are not Python; they declare nothing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError as error:
        raise NotebookError(f"the parameters cell is not valid Python (line {error.lineno}: {error.msg})") from None
    found: dict[str, Parameter] = {}
    for statement in tree.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            name = statement.target.id
            annotation = _ANNOTATIONS.get(ast.unparse(statement.annotation))
            found.pop(name, None)
            found[name] = _parameter(name, statement.value, annotation)
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    found.pop(target.id, None)
                    found[target.id] = _parameter(target.id, statement.value, None)
    return list(found.values())


def _parameter(name: str, value_node: ast.expr | None, annotation: str | None) -> Parameter:
    """A parameter from its default's expression: a literal gives its type; anything else is `any`."""
    try:
        default = ast.literal_eval(value_node) if value_node is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return Parameter(name, annotation or "any", None)
    if isinstance(default, tuple):
        default = list(default)
    inferred = _type_of(default)
    if inferred is None or not _json_safe(default):
        return Parameter(name, annotation or "any", None)
    if annotation and annotation != inferred and not (annotation == "float" and inferred == "int"):
        # `x: float = 1` is a float parameter; `x: int = "a"` declares int, and its default is not one
        return Parameter(name, annotation, None)
    declared = annotation or inferred
    if declared == "float" and isinstance(default, int):
        default = float(default)
    return Parameter(name, declared, default)


def _type_of(value: Any) -> str | None:
    if value is None:
        return "any"
    if isinstance(value, bool):
        return "bool"
    for python_type, name in ((int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(value, python_type):
            return name
    return None  # bytes, complex, set, ...: not expressible in JSON


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
