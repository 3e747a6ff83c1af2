"""The integer student as an ONNX graph: the same arithmetic as quant/integer.py, in standard ONNX ops.

uint8 pixels (N, 3, 32, 32) in, float logits (N, classes) out. Step by step,
each mirroring quant/integer.integer_logits:

  pixels -> input codes   Gather on one 768-entry uint8 table (3 channels x
                          256 values): the int8 input code + 128, read with
                          zero point 128 by the first layer (ConvInteger
                          takes uint8 activations), so the int32 sums are
                          exactly the reference's
  conv / fc               ConvInteger / MatMulInteger (uint8 codes x the int8
                          weights stored as uint8 + 128 with weight zero
                          point 128 -> int32), + int32 bias; see below
  requantisation          int64 acc * mantissa, clamped at 0 (ReLU), divided
                          by 2^shift (exact: non-negative), rounded half to
                          even from the remainder, clamped to 255 -> uint8
  TAP table               Gather on the layer's 256-entry uint8 table
  max-pool                MaxPool on the uint8 codes
  residual join           the conv's int64 acc * mantissa + the source's
                          codes (Slice / Pad: the parameter-free shortcut)
                          * their mantissa, then the same rounding
  global average pool     folded into the classifier: a ConvInteger whose
                          kernel is the whole map (every position's weight
                          the fc's), so its int32 sum is the reference's
                          sum of codes; 1/(H*W) joins the logits' scale
  classifier              its int32 accumulator x the per-class scale, in float

Why uint8 weights with a zero point and not int8 weights: onnxruntime's x86
u8 x s8 kernels on CPUs without VNNI (AVX2 machines) add pairs of products
in a saturating int16 (vpmaddubsw): a code above 129 times a weight of 127,
twice, exceeds 32,767 and the sum comes out wrong. Its u8 x u8 kernels widen
to int16 first (vpmaddwd), so they are exact on every x86 CPU, and onnxruntime
subtracts the zero point's share exactly in int32. Measured in
benchmarks/README.md ("Exact and fast on any CPU"): exact under an emulated
AVX2 CPU where int8 weights are not, and faster for ConvInteger on this
project's CPUs.

Why by hand and not torch.onnx or onnxruntime's quantizer: they export the
float simulation (QDQ pairs that a runtime may fuse or round its own way);
the point here is a graph whose every integer is the reference's, and a
per-layer lookup table, which no exporter has.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # ConvInteger, MatMulInteger (10), Gather, MaxPool on uint8 (12), all standard domain

_INPUT_ZERO = 128  # input codes are int8; the graph carries them as uint8 + 128
_WEIGHT_ZERO = 128  # int8 weights are stored as uint8 + 128 (exact on CPUs without VNNI; see above)


class _Graph:
    """A small builder: constants become initializers, each op gets a fresh output name."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _shortcut(g: _Graph, name: str, skip: str, src_channels: int, out_channels: int, step: int) -> str:
    """models.net.shortcut on a uint8 code map, as int64: every `step`-th position, zero channels padded."""
    h = g.op("Cast", [skip], to=TensorProto.INT64)
    if step > 1:
        consts = [g.const(f"{name}.skip_{k}", np.array(v, dtype=np.int64))
                  for k, v in (("starts", [0, 0]), ("ends", [2**62, 2**62]), ("axes", [2, 3]), ("steps", [step] * 2))]
        h = g.op("Slice", [h, *consts])
    extra = out_channels - src_channels
    if extra:
        pads = np.array([0, extra // 2, 0, 0, 0, extra - extra // 2, 0, 0], dtype=np.int64)
        h = g.op("Pad", [h, g.const(f"{name}.skip_pads", pads)])
    return h


def _requantize(g: _Graph, acc: str, name: str, mantissa: np.ndarray, shift: np.ndarray, conv: bool,
                skip: tuple[str, np.ndarray] | None = None) -> str:
    """int32 accumulator -> uint8 codes: round(acc * mantissa / 2^shift) half to even, clamped to 0..255; with
    `skip` (the int64 source codes and their mantissas) round((acc * mantissa + codes * skip_mantissa) / 2^shift)."""
    shape = (1, -1, 1, 1) if conv else (1, -1)
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError(f"{name}: requantisation shift {int(shift.min())}..{int(shift.max())} outside 1..62")
    mant = g.const(f"{name}.mantissa", mantissa.astype(np.int64).reshape(shape))
    power = g.const(f"{name}.pow2_shift", (np.int64(1) << shift.astype(np.int64)).reshape(shape))
    half = g.const(f"{name}.pow2_shift_minus_1", (np.int64(1) << (shift.astype(np.int64) - 1)).reshape(shape))
    zero, one, two = (g.const(f"{name}.{v}", np.array(k, dtype=np.int64)) for v, k in (("zero", 0), ("one", 1), ("two", 2)))
    top = g.const(f"{name}.qmax", np.array(255, dtype=np.int64))
    prod = g.op("Mul", [g.op("Cast", [acc], to=TensorProto.INT64), mant])
    if skip is not None:
        prod = g.op("Add", [prod, g.op("Mul", [skip[0], g.const(f"{name}.skip_mantissa",
                                                                  skip[1].astype(np.int64).reshape(shape))])])
    prod = g.op("Max", [prod, zero])  # ReLU first
    q = g.op("Div", [prod, power])  # floor, as prod >= 0
    rem = g.op("Sub", [prod, g.op("Mul", [q, power])])
    odd = g.op("Equal", [g.op("Mod", [q, two]), one])
    up = g.op("Or", [g.op("Greater", [rem, half]), g.op("And", [g.op("Equal", [rem, half]), odd])])
    q = g.op("Add", [q, g.op("Cast", [up], to=TensorProto.INT64)])
    return g.op("Cast", [g.op("Min", [q, top])], to=TensorProto.UINT8)


def build_onnx(exported, tables: dict | None = None, metadata: dict | None = None,
               image_shape=(3, 32, 32)) -> onnx.ModelProto:
    """The ONNX model of quant/integer.export_int8's `exported` (input table, layers) with optional
    {layer: 256 uint8 codes} TAP tables; `metadata` becomes the model's metadata_props."""
    lut, layers = exported
    tables = tables or {}
    g = _Graph()
    channels = image_shape[0]
    flat_lut = (np.asarray(lut, dtype=np.int64) + _INPUT_ZERO).astype(np.uint8).reshape(-1)  # (channels * 256,)
    offsets = (np.arange(channels, dtype=np.int64) * 256).reshape(1, channels, 1, 1)
    idx = g.op("Add", [g.op("Cast", ["pixels"], to=TensorProto.INT64), g.const("input.channel_offsets", offsets)])
    h = g.op("Gather", [g.const("input.table", flat_lut), idx], axis=0)
    zero_point = g.const("input.zero_point", np.array(_INPUT_ZERO, dtype=np.uint8))
    code_zero = g.const("codes.zero_point", np.array(0, dtype=np.uint8))
    weight_zero = g.const("weights.zero_point", np.array(_WEIGHT_ZERO, dtype=np.uint8))
    sources, kept = {layer.residual for layer in layers if layer.residual}, {}  # name -> (codes, channels, side)
    side = image_shape[-1]
    for i, layer in enumerate(layers):
        w = np.asarray(layer.w, dtype=np.int64)
        if np.abs(w).max() > 127:
            raise ValueError(f"{layer.name}: weights outside int8")
        x_zero = zero_point if i == 0 else code_zero
        w_u8 = (w + _WEIGHT_ZERO).astype(np.uint8)
        if layer.flatten:
            h = g.op("Flatten", [h], axis=1)
        if layer.kind == "conv":
            out_ch, fan_in = w.shape
            k = layer.kernel
            weight = g.const(f"{layer.name}.weight", w_u8.reshape(out_ch, fan_in // (k * k), k, k))
            acc = g.op("ConvInteger", [h, weight, x_zero, weight_zero], pads=[layer.padding] * 4,
                       strides=[layer.stride] * 2)
            bias = np.asarray(layer.bias, dtype=np.int32).reshape(1, -1, 1, 1)
            side = (side + 2 * layer.padding - k) // layer.stride + 1
        elif layer.gap_size:  # the fc's weight at every position of the map: ConvInteger sums them all
            kernel = np.repeat(w_u8.reshape(*w.shape, 1), layer.gap_size, axis=2)
            weight = g.const(f"{layer.name}.weight", kernel.reshape(*w.shape, side, side))
            acc = g.op("Flatten", [g.op("ConvInteger", [h, weight, x_zero, weight_zero])], axis=1)
            bias = np.asarray(layer.bias, dtype=np.int32).reshape(1, -1) * layer.gap_size
        else:
            weight = g.const(f"{layer.name}.weight", w_u8.T.copy())  # (fan_in, out)
            acc = g.op("MatMulInteger", [h, weight, x_zero, weight_zero])
            bias = np.asarray(layer.bias, dtype=np.int32).reshape(1, -1)
        acc = g.op("Add", [acc, g.const(f"{layer.name}.bias", bias)])
        if layer.classifier:
            scale = (np.asarray(layer.acc_scale) / max(layer.gap_size, 1)).astype(np.float32).reshape(1, -1)
            g.nodes.append(helper.make_node("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT),
                                                    g.const(f"{layer.name}.scale", scale)], ["logits"]))
            break
        skip = None
        if layer.residual is not None:
            codes, channels, src_side = kept[layer.residual]
            src = _shortcut(g, layer.name, codes, channels, w.shape[0], src_side // side)
            skip = src, np.asarray(layer.skip_mantissa)
        h = _requantize(g, acc, layer.name, np.asarray(layer.mantissa), np.asarray(layer.shift), layer.kind == "conv",
                        skip)
        if layer.name in tables:
            table = np.asarray(tables[layer.name], dtype=np.int64)
            if table.shape != (256,) or table.min() < 0 or table.max() > 255 or (np.diff(table) < 0).any():
                raise ValueError(f"{layer.name}: a TAP table holds 256 non-decreasing codes in 0..255")
            h = g.op("Gather", [g.const(f"{layer.name}.tap_table", table.astype(np.uint8)),
                                g.op("Cast", [h], to=TensorProto.INT64)], axis=0)
        if layer.pool:
            h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
            side //= 2
        if layer.name in sources:
            kept[layer.name] = h, w.shape[0], side
    else:
        raise ValueError("the last layer must be the classifier")
    n_classes = len(layers[-1].bias)
    graph = helper.make_graph(
        g.nodes, "tapquant_student",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", *image_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tapquant")
    model.ir_version = 8  # what onnxruntime of every recent release reads
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model, full_check=True)
    return model
