"""Run parameters against declared types: bool is not int, int is a float, unknown names and wrong types are
refused naming the field; strings stay strings."""

import pytest

from desp_hub.workflows.notebook import Parameter
from desp_hub.workflows.parameters import ParameterError, validate

DECLARED = [Parameter("n", "int", 1), Parameter("x", "float", 0.5), Parameter("s", "str", "a"),
            Parameter("b", "bool", False), Parameter("l", "list", []), Parameter("d", "dict", {}),
            Parameter("a", "any", None)]  # fmt: skip


def test_typed_values_pass_and_ints_become_floats():
    values = validate(DECLARED, {"n": 3, "x": 2, "s": "\"; import os; os.system('x')", "b": True, "l": [1, "2"],
                                 "d": {"k": [1]}, "a": {"any": None}})  # fmt: skip
    assert values == {"n": 3, "x": 2.0, "s": "\"; import os; os.system('x')", "b": True, "l": [1, "2"],
                      "d": {"k": [1]}, "a": {"any": None}}  # fmt: skip
    assert type(values["x"]) is float


def test_omitted_parameters_keep_their_defaults():
    assert validate(DECLARED, {}) == {} and validate(DECLARED, None) == {}


@pytest.mark.parametrize(("given", "field"), [
    ({"n": True}, "parameters.n"), ({"n": 1.0}, "parameters.n"), ({"n": "1"}, "parameters.n"),
    ({"x": False}, "parameters.x"), ({"x": "0.5"}, "parameters.x"), ({"x": float("nan")}, "parameters.x"),
    ({"s": 1}, "parameters.s"), ({"s": None}, "parameters.s"), ({"s": "a\x00b"}, "parameters.s"),
    ({"b": 0}, "parameters.b"), ({"b": "true"}, "parameters.b"), ({"l": "[1]"}, "parameters.l"),
    ({"d": [["k", 1]]}, "parameters.d"), ({"a": float("inf")}, "parameters.a"),
    ({"unknown": 1}, "parameters.unknown"), ([1, 2], "parameters"), ("n=1", "parameters"),
])  # fmt: skip
def test_wrong_types_and_unknown_names_are_refused_naming_the_field(given, field):
    with pytest.raises(ParameterError) as error:
        validate(DECLARED, given)
    assert error.value.field == field
