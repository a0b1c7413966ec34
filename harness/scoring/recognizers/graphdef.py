"""A minimal reader for frozen TensorFlow ``GraphDef`` files (``*.pb``), without TensorFlow.

Only what the FaceNet port needs: each node's name, op, inputs and attributes, and the value of
``Const`` nodes as numpy arrays. The protobuf wire format is decoded directly (field numbers
from ``tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto``), so
neither ``tensorflow`` nor generated protobuf classes are required.

Example:
    >>> graph = read_graphdef("graph_final.pb")          # doctest: +SKIP
    >>> graph.const("InceptionResnetV1/Conv2d_1a_3x3/weights").shape   # doctest: +SKIP
    (3, 3, 3, 32)
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# tensorflow/core/framework/types.proto DataType values we can decode.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
}


class GraphDefError(ValueError):
    """The bytes are not a GraphDef this reader understands."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise GraphDefError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos
        if shift > 70:
            raise GraphDefError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yields ``(field_number, wire_type, value)``; length-delimited values stay memoryviews."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise GraphDefError("truncated length-delimited field")
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            value = buf[pos : pos + 4]
            pos += 4
        elif wire == 1:
            value = buf[pos : pos + 8]
            pos += 8
        else:
            raise GraphDefError(f"unsupported wire type {wire}")
        if pos > end:
            raise GraphDefError("truncated field")
        yield number, wire, value


def _packed_varints(value: Any, wire: int) -> list[int]:
    if wire == 0:
        return [value]
    out: list[int] = []
    pos = 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(item)
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims: list[int] = []
    for number, _, value in _fields(buf):
        if number == 2:  # Dim
            size = 0
            for dnum, _, dval in _fields(value):
                if dnum == 1:
                    size = _signed64(dval)
            dims.append(size)
    return tuple(dims)


def _tensor(buf: memoryview) -> np.ndarray:
    dtype_code = 0
    shape: tuple[int, ...] = ()
    content: bytes | None = None
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype_code = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = bytes(value)
        elif number == 5:  # float_val (packed or not)
            raw = bytes(value)
            floats.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif number in (7, 10):  # int_val / int64_val
            ints.extend(_signed64(v) for v in _packed_varints(value, wire))
    if dtype_code not in _DTYPES:
        raise GraphDefError(f"unsupported tensor dtype {dtype_code}")
    dtype = _DTYPES[dtype_code]
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        array = np.frombuffer(content, dtype=dtype).copy()
    else:
        values = floats if dtype.kind == "f" else ints
        if not values:
            array = np.zeros(count, dtype=dtype)
        else:
            array = np.asarray(values, dtype=dtype)
            if array.size == 1 and count != 1:  # TF stores a splat as one value
                array = np.full(count, array[0], dtype=dtype)
    if array.size != count:
        raise GraphDefError(f"tensor has {array.size} values for shape {shape}")
    return array.reshape(shape)


def _attr(buf: memoryview) -> Any:
    """Decodes an AttrValue to a Python value (str, int, float, bool, list, tuple or ndarray)."""
    for number, _, value in _fields(buf):
        if number == 2:
            return bytes(value).decode("utf-8", "replace")
        if number in (3, 6):
            return _signed64(value)
        if number == 4:
            return struct.unpack("<f", bytes(value))[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
        if number == 1:  # ListValue
            items: list[Any] = []
            for lnum, lwire, lval in _fields(value):
                if lnum == 2:
                    items.append(bytes(lval).decode("utf-8", "replace"))
                elif lnum in (3, 6):
                    items.extend(_signed64(v) for v in _packed_varints(lval, lwire))
                elif lnum == 4:
                    raw = bytes(lval)
                    items.extend(struct.unpack(f"<{len(raw) // 4}f", raw))
            return items
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One ``NodeDef``.

    Attributes:
        name: Node name, e.g. ``"InceptionResnetV1/Conv2d_1a_3x3/Conv2D"``.
        op: Op type, e.g. ``"Conv2D"``.
        inputs: Input node names as written in the graph (``"x:0"``, ``"^ctrl"``).
        attrs: Decoded attributes (``padding`` -> ``"SAME"``, ``strides`` -> ``[1, 2, 2, 1]``,
            ``value`` -> ndarray for ``Const`` nodes).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Graph:
    """A decoded GraphDef: nodes by name, in file order."""

    nodes: dict[str, Node]

    def const(self, name: str) -> np.ndarray:
        """Returns the value of the ``Const`` node ``name``.

        Raises:
            KeyError: No such node, or it is not a ``Const``.
        """
        node = self.nodes.get(name)
        if node is None or node.op != "Const":
            raise KeyError(f"no Const node named {name!r}")
        return node.attrs["value"]


def parse_graphdef(data: bytes) -> Graph:
    """Decodes serialized ``GraphDef`` bytes.

    Raises:
        GraphDefError: The bytes are not a decodable GraphDef.
    """
    nodes: dict[str, Node] = {}
    try:
        for number, _, value in _fields(memoryview(data)):
            if number != 1:  # 1 = node; library/versions are ignored
                continue
            name = op = ""
            inputs: list[str] = []
            attrs: dict[str, Any] = {}
            for nnum, _, nval in _fields(value):
                if nnum == 1:
                    name = bytes(nval).decode()
                elif nnum == 2:
                    op = bytes(nval).decode()
                elif nnum == 3:
                    inputs.append(bytes(nval).decode())
                elif nnum == 5:  # map<string, AttrValue> entry
                    key = ""
                    attr_value: Any = None
                    for anum, _, aval in _fields(nval):
                        if anum == 1:
                            key = bytes(aval).decode()
                        elif anum == 2:
                            attr_value = _attr(aval)
                    attrs[key] = attr_value
            nodes[name] = Node(name, op, tuple(inputs), attrs)
    except (UnicodeDecodeError, struct.error, IndexError) as exc:
        raise GraphDefError(f"not a GraphDef: {exc}") from exc
    if not nodes:
        raise GraphDefError("no nodes found")
    return Graph(nodes)


def read_graphdef(path: str | Path) -> Graph:
    """Reads and decodes a frozen GraphDef file.

    Raises:
        OSError: The file cannot be read.
        GraphDefError: The file is not a decodable GraphDef.
    """
    return parse_graphdef(Path(path).read_bytes())
