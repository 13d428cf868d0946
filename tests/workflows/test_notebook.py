"""Notebook parsing: content hash and the parameters a `parameters` cell declares (parsed, never executed)."""

import copy
import json

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from desp_hub.workflows.notebook import NotebookError, Parameter, content_hash, declared_parameters, read_notebook


def notebook(parameters=None, *sources):
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]})] if parameters is not None else []
    nb = new_notebook(cells=cells + [new_code_cell(source) for source in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_types_come_from_literal_defaults_and_annotations():
    nb = notebook(
        "# comment\n"
        "year = 2020\n"
        "scale = 1.5\n"
        "label = 'alps'\n"
        "flag = True\n"
        "areas = ['a', 'b']\n"
        "bbox = {'west': 5, 'east': 15}\n"
        "anything = None\n"
        "ratio: float = 1\n"
        "count: int = 3\n"
        "pair = (1, 2)\n"
        "today = __import__('datetime').date.today()\n"
        "%matplotlib inline\n"
        "a = b = 7\n"
    )
    assert declared_parameters(nb) == [
        Parameter("year", "int", 2020), Parameter("scale", "float", 1.5), Parameter("label", "str", "alps"),
        Parameter("flag", "bool", True), Parameter("areas", "list", ["a", "b"]),
        Parameter("bbox", "dict", {"west": 5, "east": 15}), Parameter("anything", "any", None),
        Parameter("ratio", "float", 1.0), Parameter("count", "int", 3), Parameter("pair", "list", [1, 2]),
        Parameter("today", "any", None), Parameter("a", "int", 7), Parameter("b", "int", 7),
    ]  # fmt: skip


def test_no_parameters_cell_declares_nothing_and_a_broken_one_is_refused():
    assert declared_parameters(notebook(None, "x = 1")) == []
    with pytest.raises(NotebookError) as error:
        declared_parameters(notebook("x = (", "print(x)"))
    assert error.value.field == "notebook"


def test_the_last_assignment_wins_and_a_conflicting_annotation_keeps_its_type():
    assert declared_parameters(notebook("x = 1\nx = 'one'\ny: int = 'a'")) == [
        Parameter("x", "str", "one"), Parameter("y", "int", None)
    ]


def test_the_hash_covers_code_and_kernel_not_outputs_or_counts():
    nb = notebook("x = 1", "print(x)")
    ran = copy.deepcopy(nb)
    ran.cells[1].outputs = [new_output("stream", name="stdout", text="1\n")]
    ran.cells[1].execution_count = 4
    ran.metadata["widgets"] = {"state": {}}
    assert content_hash(ran) == content_hash(nb)
    edited = copy.deepcopy(nb)
    edited.cells[1].source = "print(x + 1)"
    assert content_hash(edited) != content_hash(nb)
    other_kernel = copy.deepcopy(nb)
    other_kernel.metadata.kernelspec = {"name": "ir", "display_name": "R", "language": "R"}
    assert content_hash(other_kernel) != content_hash(nb)
    as_markdown = copy.deepcopy(nb)
    as_markdown.cells[1] = new_markdown_cell("print(x)")
    assert content_hash(as_markdown) != content_hash(nb)
    # a list source hashes as its joined text
    listed = copy.deepcopy(nb)
    listed.cells[1].source = ["print", "(x)"]
    assert content_hash(listed) == content_hash(nb)


@pytest.mark.parametrize("bad", [None, [], "not json", {"cells": []}, {"nbformat": 3, "cells": []},
                                 {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "x"}]}])
def test_only_valid_nbformat_4_is_read(bad):
    with pytest.raises(NotebookError):
        read_notebook(bad)


def test_a_valid_notebook_reads_from_dict_or_text():
    nb = notebook("x = 1")
    assert read_notebook(json.loads(json.dumps(nb))).cells[0].source == "x = 1"
    assert read_notebook(json.dumps(nb)).cells[0].source == "x = 1"
