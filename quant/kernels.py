"""How the search runs a frozen INT8 teacher's stages: on codes, in and out.

The scorer (envs/problem.py) runs the student stage by stage on activation
codes: stage i reads the (tabled, max-pooled) codes of stage i-1 and returns
its own post-ReLU codes, or logits for the classifier. Two backends:

  * `Int8Stages`: real INT8 kernels on the CPU (oneDNN, the library behind
    PyTorch's x86 quantized inference): uint8 codes x int8 per-channel
    weights, int32 accumulation and bias, requantised to uint8 codes in one
    call. On this project's 2-core CPU LeNet-5's conv2 runs ~2.5x faster
    than its float simulation, and every tensor between stages is 4x
    smaller. The kernels requantise in float32 (acc * s_in * s_w / s_out,
    rounded half to even), so a code can differ from the float simulation
    (QuantNet) when the exact value sits within float32 rounding of a .5
    boundary: a few codes in a million, as the float simulation itself
    differs from exact integer arithmetic.
    One catch: without VNNI, x86 int8 kernels multiply u8 x s8 pairs into a
    *saturating* int16 (vpmaddubsw) before widening to int32, so
    c0*w0 + c1*w1 must fit in int16. With |w| <= 127 that is guaranteed
    while every input code is <= 129 (127 * 258 = 32766). With VNNI
    (vpdpbusd) the products go straight into int32 and every code is exact.
    Which one this CPU does is measured once, not read from a flag list
    (`int8_exact_max_code`: a conv and a matmul on codes 255 x weights 127),
    and a batch with a code above that bound runs that stage in the float
    simulation. Tabled codes stay <= tmax, so the student almost always
    runs in int8; on CPUs without VNNI the teacher's own larger codes take
    the float path.
  * `FloatStages`: QuantNet's own float simulation, on any device (CUDA, or
    a CPU build without oneDNN). Codes are float tensors; the input scale is
    folded into the weights so that a stage reads codes directly.

Both keep conv maps channels-last and flatten a channels-last map into the
first fc layer without a copy (its weight's columns permuted to match). A
residual stage's `codes` takes its source's codes too (`skip`): the int8
conv then returns its float32 sum, and the join (+ s_r * skip, / s_out,
round, clamp) is one elementwise pass.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from models.net import shortcut
from quant.fake_quant import A_QMAX
from quant.lookup import is_channels_last
from quant.qat import QuantNet

INT8_SAFE_MAX = 129  # the largest input code for which no u8 x s8 pair sum saturates int16 (see above)


def _hwc_columns(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The first fc layer's weight with columns in (h, w, c) order, matching a flattened channels-last map."""
    return w.view(w.shape[0], *h.shape[1:]).permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _flatten(h: torch.Tensor) -> torch.Tensor:
    return h.permute(0, 2, 3, 1).flatten(1) if is_channels_last(h) else h.flatten(1)


def int8_kernels_available() -> bool:
    """True where PyTorch ships oneDNN's int8 conv/linear ops (x86 CPU builds)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.onednn.qconv2d_pointwise
                    and torch.ops.onednn.qlinear_pointwise)
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def int8_exact_max_code() -> int:
    """The largest input code this CPU's oneDNN u8 x s8 kernels multiply exactly: 255 where they accumulate in
    int32 (VNNI), INT8_SAFE_MAX where pairs of products go through a saturating int16 (AVX2, AVX-512 without
    VNNI). Measured with the kernels the scorer calls (a conv and a matmul, every code 255, every weight 127),
    so it follows what oneDNN dispatches to, ONEDNN_MAX_CPU_ISA included. 0 where there are no int8 kernels
    or they refuse to run on this CPU: the scorer then uses the float simulation."""
    if not int8_kernels_available():
        return 0
    try:
        conv, linear = _probe_int8_kernels()
    except RuntimeError:  # oneDNN without an int8 implementation for this instruction set
        return 0
    exact = 64 * A_QMAX * 127
    return A_QMAX if bool((conv == exact).all() and (linear == exact).all()) else INT8_SAFE_MAX


def _probe_int8_kernels() -> tuple[torch.Tensor, torch.Tensor]:
    """int32 sums of 64 codes of 255 x weights of 127, through the conv and the matmul the scorer calls."""
    ops, one = torch.ops.onednn, torch.ones(1)
    zero_points = torch.zeros(1, dtype=torch.int64)
    w = torch.full((1, 64, 1, 1), 127, dtype=torch.int8)
    x = torch.full((4, 64, 4, 4), A_QMAX, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    packed = ops.qconv_prepack(w, one, 1.0, 0, [1, 1], [0, 0], [1, 1], 1, None)
    conv = ops.qconv2d_pointwise(x, 1.0, 0, packed, one, zero_points, None, [1, 1], [0, 0], [1, 1], 1,
                                 1.0, 0, torch.float32, "none", [], "")
    packed = ops.qlinear_prepack(w.flatten(1), None)
    linear = ops.qlinear_pointwise(x[:, :, 0, 0].contiguous(), 1.0, 0, packed, one, zero_points, None,
                                   1.0, 0, torch.float32, "none", [], "")
    return conv, linear


def _join(qnet: QuantNet, i: int, y: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """Stage i's float output (+ its residual source's codes at their scale) -> codes, as float."""
    st = qnet.stages[i]
    if st.residual is not None:
        s_r = qnet.act_scale(qnet.stage_index(st.residual))
        y = y + shortcut(skip, y.shape).to(y.dtype) * s_r
    return (y / qnet.act_scale(i)).clamp_(0, 255).round_()


class FloatStages:
    """QuantNet's float simulation, reading and returning codes (float tensors)."""

    dtype = torch.float32
    name = "float"

    def __init__(self, qnet: QuantNet):
        self.qnet = qnet
        # Stage i reads s_in * q: fold s_in into the weight once (the bias already is in output units).
        self._weights = {}
        for i in range(len(qnet.stages)):
            w, b = qnet.quantised_weights(i)
            self._weights[i] = (w * qnet.in_scale(i), b)
        self._hwc: dict = {}  # stage -> its weight for a flattened channels-last map, made on first use

    def _linear(self, i: int, q: torch.Tensor) -> torch.Tensor:
        st = self.qnet.stages[i]
        w, b = self._weights[i]
        if st.gap:
            q = q.mean((2, 3))
        if st.flatten:
            if is_channels_last(q):
                if i not in self._hwc:
                    self._hwc[i] = _hwc_columns(w, q)
                w = self._hwc[i]
            q = _flatten(q)
        if st.kind == "conv":
            return F.conv2d(q, w, b, stride=st.stride, padding=st.padding)
        return F.linear(q, w, b)

    def codes(self, i: int, q: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        return _join(self.qnet, i, self._linear(i, q), skip)

    def logits(self, i: int, q: torch.Tensor) -> torch.Tensor:
        return self._linear(i, q)


class Int8Stages:
    """oneDNN int8 kernels (CPU): uint8 codes in, uint8 codes (or float32 logits) out."""

    dtype = torch.uint8
    name = "int8"

    def __init__(self, qnet: QuantNet):
        self.qnet = qnet
        self.exact_max = int8_exact_max_code()
        self._float = FloatStages(qnet)  # for inputs with codes above exact_max
        self._params = {}
        self._packed: dict = {}
        for i, st in enumerate(qnet.stages):
            wq, s_w, bias = (t.cpu() for t in qnet.int8_weights(i))
            s_out = 1.0 if st.classifier else float(qnet.act_scale(i))
            zero_points = torch.zeros(len(s_w), dtype=torch.int64)
            self._params[i] = (wq, s_w, bias, float(qnet.in_scale(i)), s_out, zero_points)

    def _pack(self, i: int, q: torch.Tensor) -> torch.Tensor:
        """Weights in oneDNN's own layout, made on first use (the fc layer's depends on q's layout)."""
        key = (i, is_channels_last(q))
        if key not in self._packed:
            st = self.qnet.stages[i]
            wq, s_w, _, s_in, _, _ = self._params[i]
            if st.kind == "conv":
                self._packed[key] = torch.ops.onednn.qconv_prepack(
                    wq, s_w, s_in, 0, [st.stride] * 2, [st.padding] * 2, [1, 1], 1, None)
            else:
                if st.flatten and is_channels_last(q):
                    wq = _hwc_columns(wq, q)
                self._packed[key] = torch.ops.onednn.qlinear_prepack(wq.contiguous(), None)
        return self._packed[key]

    def _run(self, i: int, q: torch.Tensor) -> torch.Tensor:
        st = self.qnet.stages[i]
        packed = self._pack(i, q)
        _, s_w, bias, s_in, s_out, zero_points = self._params[i]
        # A residual stage's sum leaves in float32 (unit scale) for the join.
        as_float = st.classifier or st.residual is not None
        out_dtype = torch.float32 if as_float else None  # None: uint8 codes at s_out
        post_op = "none" if as_float else "relu"
        if st.kind == "conv":
            return torch.ops.onednn.qconv2d_pointwise(
                q.contiguous(memory_format=torch.channels_last), s_in, 0, packed, s_w, zero_points, bias,
                [st.stride] * 2, [st.padding] * 2, [1, 1], 1, 1.0 if as_float else s_out, 0, out_dtype,
                post_op, [], "")
        if st.flatten:
            q = _flatten(q)
        return torch.ops.onednn.qlinear_pointwise(
            q.contiguous(), s_in, 0, packed, s_w, zero_points, bias, s_out, 0, out_dtype, post_op, [], "")

    def codes(self, i: int, q: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.exact_max < A_QMAX and q.amax() > self.exact_max:
            return self._float.codes(i, q.float(), skip).to(torch.uint8)
        if self.qnet.stages[i].residual is not None:
            return _join(self.qnet, i, self._run(i, q), skip).to(torch.uint8)
        return self._run(i, q)

    def logits(self, i: int, q: torch.Tensor) -> torch.Tensor:
        # A globally pooled classifier is a 64 x 10 product on float means: the float path is as fast.
        if self.qnet.stages[i].gap or (self.exact_max < A_QMAX and q.amax() > self.exact_max):
            return self._float.logits(i, q.float())
        return self._run(i, q)


def kernels_line(device: torch.device | str = "cpu", backend: str = "auto") -> str:
    """One line saying which kernels the scorer and the exports run on this machine, and why."""
    device = torch.device(device)
    cpu = f"CPU {torch.backends.cpu.get_cpu_capability()}"
    if device.type != "cpu" or backend == "float" or not int8_exact_max_code():
        why = "asked" if backend == "float" else "no oneDNN int8 kernels here" if device.type == "cpu" else device
        scorer = f"float simulation ({why})"
    elif int8_exact_max_code() == A_QMAX:
        scorer = "int8 (oneDNN; VNNI: exact for every code)"
    else:
        scorer = (f"int8 (oneDNN; no VNNI: u8 x s8 pairs saturate int16 above code {INT8_SAFE_MAX}, "
                  "so such batches run in the float simulation)")
    return f"[Kernels] {cpu} | search scorer: {scorer} | ONNX export: u8 x u8 integer ops, exact on any CPU"


_announced: set = set()


def announce_kernels(device: torch.device | str = "cpu", backend: str = "auto") -> None:
    """Print kernels_line once per process and choice (a pipeline, a search, a sweep worker)."""
    line = kernels_line(device, backend)
    if line not in _announced:
        _announced.add(line)
        print(line, flush=True)


def stage_kernels(qnet: QuantNet, device: torch.device, backend: str = "auto"):
    """The backend for the search: int8 kernels on a CPU that has them, else the float simulation."""
    if backend not in ("auto", "int8", "float"):
        raise ValueError(f"backend must be auto, int8 or float, got {backend!r}")
    if backend == "int8" and (device.type != "cpu" or not int8_exact_max_code()):
        raise ValueError("the int8 backend needs a CPU build of PyTorch with oneDNN int8 kernels for this CPU; "
                         "use --backend float")
    if backend == "int8" or (backend == "auto" and device.type == "cpu" and int8_exact_max_code()):
        return Int8Stages(qnet)
    return FloatStages(qnet)
