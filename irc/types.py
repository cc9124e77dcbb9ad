"""Element and tensor types of the irc IR.

A tensor type is an element type plus a shape. Quantization lives in the type, as in Glow
and MLIR's quant dialect: a value of type ``qi8<0.0213:-4>[1,16,32,32]`` holds plain storage
integers, and its scale and zero point never travel with the data.

Dimensions are ints, or strings for symbolic dimensions (``f32[N,3,224,224]``) that are
specialised when an input shape is given.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]


class DType(enum.Enum):
    """Element types: the storage type of every value in the IR."""

    F64 = ("f64", "float64", 64)
    F32 = ("f32", "float32", 32)
    F16 = ("f16", "float16", 16)
    I64 = ("i64", "int64", 64)
    I32 = ("i32", "int32", 32)
    I16 = ("i16", "int16", 16)
    I8 = ("i8", "int8", 8)
    U64 = ("u64", "uint64", 64)
    U32 = ("u32", "uint32", 32)
    U16 = ("u16", "uint16", 16)
    U8 = ("u8", "uint8", 8)
    I4 = ("i4", "int8", 4)
    U4 = ("u4", "uint8", 4)
    I2 = ("i2", "int8", 2)
    U2 = ("u2", "uint8", 2)
    BOOL = ("bool", "bool", 8)

    def __init__(self, short: str, numpy_name: str, bits: int):
        self.short = short
        self.numpy_name = numpy_name
        self.bits = bits

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds one unpacked element."""
        return np.dtype(self.numpy_name)

    @property
    def is_float(self) -> bool:
        return self.short.startswith("f")

    @property
    def is_signed(self) -> bool:
        return self.short.startswith(("i", "f"))

    @property
    def is_sub_byte(self) -> bool:
        return self.bits < 8

    @staticmethod
    def from_short(short: str) -> DType:
        """The DType whose printed name is ``short`` (``f32``, ``i8``, …)."""
        try:
            return _BY_SHORT[short]
        except KeyError:
            raise ValueError(f"unknown element type '{short}'") from None

    @staticmethod
    def from_numpy(dtype) -> DType:
        """The DType that a numpy array of ``dtype`` holds."""
        dtype = np.dtype(dtype)
        try:
            return _BY_NUMPY[dtype.name]
        except KeyError:
            raise ValueError(f"numpy dtype '{dtype}' has no irc element type") from None

    def __repr__(self) -> str:
        return f"DType.{self.name}"


_BY_SHORT = {d.short: d for d in DType}
_BY_NUMPY = {d.numpy_name: d for d in DType if not d.is_sub_byte}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization parameters: real = scale * (stored - zero_point).

    ``axis`` is None for per-tensor parameters (one scale, one zero point), else the axis
    along which ``scales`` and ``zero_points`` vary. In an elided dump the per-axis lists
    are dropped and only their length ``count`` is kept.
    """

    scales: tuple[float, ...] | None
    zero_points: tuple[int, ...] | None
    axis: int | None = None
    count: int = 1

    def __post_init__(self):
        if self.scales is not None:
            if len(self.scales) != len(self.zero_points or ()):
                raise ValueError("quantization scales and zero points differ in length")
            object.__setattr__(self, "count", len(self.scales))
        if self.axis is None and self.count != 1:
            raise ValueError("per-tensor quantization takes exactly one scale")

    @property
    def elided(self) -> bool:
        return self.scales is None

    @staticmethod
    def per_tensor(scale: float, zero_point: int = 0) -> QuantParams:
        return QuantParams((float(scale),), (int(zero_point),), None)

    @staticmethod
    def per_axis(scales, zero_points, axis: int) -> QuantParams:
        return QuantParams(
            tuple(float(s) for s in scales), tuple(int(z) for z in zero_points), int(axis)
        )

    def elide(self) -> QuantParams:
        """The same parameters with per-axis lists dropped (for compact dumps)."""
        if self.axis is None or self.elided:
            return self
        return QuantParams(None, None, self.axis, self.count)


@dataclass(frozen=True)
class TensorType:
    """A tensor's element type, shape and optional quantization parameters."""

    dtype: DType
    shape: Shape
    quant: QuantParams | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        for d in self.shape:
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer, str)):
                raise ValueError(f"dimension {d!r} is neither an int nor a symbol")
            if isinstance(d, (int, np.integer)) and d < 0:
                raise ValueError(f"negative dimension {d} in shape {self.shape}")
        object.__setattr__(
            self, "shape", tuple(int(d) if not isinstance(d, str) else d for d in self.shape)
        )

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when no dimension is symbolic."""
        return all(isinstance(d, int) for d in self.shape)

    @property
    def num_elements(self) -> int:
        if not self.is_static:
            raise ValueError(f"type {self} has symbolic dimensions")
        return int(np.prod(self.shape, dtype=np.int64))

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape), self.quant)

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape, None)

    def __str__(self) -> str:
        # the printer owns the text form, and imports this module: a top-level import cycles
        from irc.printer import format_type

        return format_type(self)


def tensor_type(dtype, shape) -> TensorType:
    """A float or integer tensor type from a DType (or numpy dtype) and a shape."""
    if not isinstance(dtype, DType):
        dtype = DType.from_numpy(dtype)
    return TensorType(dtype, tuple(shape))


def type_of_array(array: np.ndarray) -> TensorType:
    """The tensor type of a numpy array."""
    return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))
