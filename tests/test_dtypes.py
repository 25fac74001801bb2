"""Stream layouts, simpleDType text in both forms, parsing of what servers send, the shape rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from qm_xarray.dtypes import StreamLayout, final_shape, parse_simple_dtype
from qm_xarray.errors import QmInvalidSchemaError, QmQuaException
from qm_xarray.testing.strategies import layouts

# (dtype, shape, timestamps) -> nested simpleDType/shape, flat simpleDType/shape (wire-protocol.md d)
TABLE = [
    (("<f8", (), False), '[["value", "<f8"]]', [1], '"<f8"', [1]),
    (("<i8", (3,), False), '[["value", "<i8", [3]]]', [1], '"<i8"', [3]),
    (("<f8", (), True), '[["value", [["value", "<f8"], ["timestamp", "<i8"]]]]', [1],
     '[["value", "<f8"], ["timestamp", "<i8"]]', [1]),
    (("bool", (), False), '[["value", "|b1"]]', [1], '"|b1"', [1]),
    (("<f8", (2, 5), False), '[["value", "<f8", [2, 5]]]', [1], '"<f8"', [2, 5]),
]


@pytest.mark.parametrize(("args", "nested", "nshape", "flat", "fshape"), TABLE)
def test_simple_dtype_table(args, nested, nshape, flat, fshape):
    layout = StreamLayout.create(*args)
    assert (layout.simple_dtype(False), layout.header_shape(False)) == (nested, nshape)
    assert (layout.simple_dtype(True), layout.header_shape(True)) == (flat, fshape)


@given(layouts())
def test_both_forms_describe_the_same_bytes(layout):
    for flat in (False, True):
        dt = parse_simple_dtype(layout.simple_dtype(flat))
        per_item = dt.itemsize * int(np.prod(layout.header_shape(flat)))
        assert per_item == layout.itemsize == layout.item_dtype.itemsize


@pytest.mark.parametrize(("text", "expected"), [
    ('"<f8"', np.dtype("<f8")), ('"float64"', np.dtype("f8")), ('">i4"', np.dtype(">i4")),
    ('"bool8"', np.dtype(bool)), ('[["value", "bool8"]]', np.dtype([("value", bool)])),
    ('[{"__tuple__": true, "items": ["value", "<i8", [3]]}]', np.dtype([("value", "<i8", (3,))])),
    ('[["value", "<f8", {"__tuple__": true, "items": [2]}]]', np.dtype([("value", "<f8", (2,))])),
])
def test_parse_accepts_what_servers_send(text, expected):
    assert parse_simple_dtype(text) == expected


@pytest.mark.parametrize("text", ['"O"', "not json", '"nonsense"', "[1, 2]",
                                  '{"__tuple__": true, "items": ["<f8", [3]]}'])
def test_parse_rejects_garbage_with_a_typed_error(text):
    with pytest.raises(QmInvalidSchemaError) as info:
        parse_simple_dtype(text)
    assert isinstance(info.value, ValueError) and isinstance(info.value, QmQuaException)


def test_final_shape_rule():
    assert final_shape(1, [3]) == (3,)
    assert final_shape(1, [1]) == (1,)
    assert final_shape(5, [1]) == (5,)
    assert final_shape(5, [2, 3]) == (5, 2, 3)
    assert final_shape(0, [1]) == (0,)
    assert final_shape(0, [3]) == (0, 3)


@pytest.mark.parametrize(("dtype", "shape"), [("O", ()), ("<U3", ()), ([("a", "<f8")], ()),
                                              ("<f8", (0,)), ("<f8", (-1,)), ("<f8", ("x",))])
def test_invalid_layouts_are_refused(dtype, shape):
    with pytest.raises(QmInvalidSchemaError):
        StreamLayout.create(dtype, shape)


def test_pack_casts_only_without_loss():
    layout = StreamLayout.create("<f8", (2,))
    assert layout.pack([1, 2]).shape == (1, 2)  # ints into floats: fine, one item
    ints = StreamLayout.create("<i8")
    with pytest.raises(TypeError, match="stream 'n'"):
        ints.pack(np.array([1.0, np.nan]), "n")
    with pytest.raises(TypeError):
        StreamLayout.create("|b1").pack([0, 1])
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        layout.pack(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="record array"):
        StreamLayout.create("<f8", timestamps=True).pack([1.0])


@pytest.mark.parametrize(("dtype", "values"), [("<i1", [300]), ("<u2", [-1]), ("<f4", [1e300])])
def test_pack_refuses_values_that_do_not_fit(dtype, values):
    with pytest.raises(ValueError, match="stream 's'"):
        StreamLayout.create(dtype).pack(np.array(values), "s")
    assert StreamLayout.create(dtype).pack(np.array([1])).tolist() == [1]


@pytest.mark.parametrize("shape", ["12", (2.5,), (np.float64(3.0),), [None]])
def test_shapes_that_are_not_tuples_of_ints_are_refused(shape):
    with pytest.raises(QmInvalidSchemaError, match="item shape"):
        StreamLayout.create("<f8", shape)


@pytest.mark.parametrize("text", [", ", "f8,", "(", "1,2)"])
def test_a_dtype_string_numpy_cannot_parse_is_an_invalid_schema(text):
    """numpy parses comma strings with `ast` and raises SyntaxError: still a typed, clear error."""
    from qm_xarray.dtypes import element_dtype
    from qm_xarray.errors import QmInvalidSchemaError

    with pytest.raises(QmInvalidSchemaError, match="invalid element dtype"):
        element_dtype(text)
