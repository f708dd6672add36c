"""Build the EfficientNet-Lite ONNX graph straight from a checkpoint, without torch.

The graph is written node by node with ``onnx.helper``: every convolution has its batch
norm folded into its weights and bias, depthwise convolutions are ``Conv`` with
``group = channels``, ReLU6 is ``Clip(0, 6)``, TensorFlow "SAME" padding becomes each
``Conv``'s explicit (asymmetric) ``pads`` (the input size is fixed, so they are constants),
and the pooled output is ``GlobalAveragePool`` + ``Flatten``. The batch axis is dynamic.

The result computes what the torch reference model (:mod:`.efficientnet_lite`) computes:
the tests require cosine >= 0.9999 between the two on real photos (measured: > 0.999999).

Example
-------
>>> from lookalike.encoders.checkpoint import read_checkpoint
>>> model = build_lite_graph(read_checkpoint(path), "efficientnet-lite0")  # doctest: +SKIP
>>> onnx.save(model, "lite0.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from . import lite_arch

ONNX_OPSET = 18
# ONNX IR version 8 (onnx 1.13+) carries opset 18; kept explicit so any onnxruntime >= 1.14 loads the file.
IR_VERSION = 8
INPUT_NAME, OUTPUT_NAME, LOGITS_NAME = "images", "features", "logits"
# Part of the cache file name: bump it whenever the graph this module writes changes.
GRAPH_VERSION = 1


class _GraphBuilder:
    """Collects nodes and initializers; tracks the feature map's spatial size for SAME padding."""

    def __init__(self, state: dict[str, np.ndarray], image_size: int):
        self.state = state
        self.used: set[str] = set()
        self.nodes: list = []
        self.initializers: list = []
        self.size = image_size
        self.n = 0

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise KeyError(f"the checkpoint has no tensor {key!r}: is it an EfficientNet-Lite state dict?")
        self.used.add(key)
        return np.asarray(self.state[key])

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        self.n += 1
        out = f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}", **attrs))
        return out

    def conv_bn(self, x: str, conv: str, bn: str, *, stride: int = 1, groups: int = 1, relu6: bool = True) -> str:
        """``conv`` (no bias) followed by batch norm ``bn``, folded into one ``Conv`` (+ ``Clip``)."""
        w = self.take(f"{conv}.weight").astype(np.float64)
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        if f"{bn}.num_batches_tracked" in self.state:
            self.take(f"{bn}.num_batches_tracked")  # a training counter: not used in inference
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + lite_arch.BN_EPS)
        weight = (w * scale[:, None, None, None]).astype(np.float32)
        bias = (beta - mean * scale).astype(np.float32)
        k = w.shape[-1]
        before, after = lite_arch.same_pads(self.size, k, stride)
        y = self.node("Conv", [x, self.const(f"{conv}.w", weight), self.const(f"{conv}.b", bias)],
                      kernel_shape=[k, k], strides=[stride, stride], group=groups,
                      pads=[before, before, after, after])
        self.size = -(-self.size // stride)
        return self.node("Clip", [y, "zero", "six"]) if relu6 else y


def build_lite_graph(state: dict[str, np.ndarray], name: str, *, logits: bool = False):
    """Build the ONNX model of EfficientNet-Lite variant ``name`` from its checkpoint.

    Parameters
    ----------
    state : dict of str to ndarray
        The checkpoint's tensors (:func:`.checkpoint.read_checkpoint`); all of them must be
        used (like ``load_state_dict(strict=True)``).
    name : str
        ``"efficientnet-lite0"`` ... ``"efficientnet-lite4"``.
    logits : bool, default False
        Also output the ImageNet classifier's ``logits`` (B, 1000), for checking the weights.

    Returns
    -------
    onnx.ModelProto
        Input ``images`` (B, 3, S, S) float32 (preprocessed as :func:`.preprocess.preprocess`
        does); output ``features`` (B, 1280) float32: the globally average-pooled last
        feature map (values >= 0), not normalised.
    """
    from onnx import TensorProto, checker, helper

    _, _, image_size = lite_arch.check_variant(name)
    g = _GraphBuilder(state, image_size)
    g.const("zero", np.array(0.0, np.float32))
    g.const("six", np.array(6.0, np.float32))

    x = g.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", stride=2)
    for i, b in enumerate(lite_arch.blocks(name)):
        p = f"_blocks.{i}"
        y = x
        if b.expand != 1:
            y = g.conv_bn(y, f"{p}._expand_conv", f"{p}._bn0")
        mid = b.c_in * b.expand
        y = g.conv_bn(y, f"{p}._depthwise_conv", f"{p}._bn1", stride=b.stride, groups=mid)
        y = g.conv_bn(y, f"{p}._project_conv", f"{p}._bn2", relu6=False)
        x = g.node("Add", [y, x]) if b.residual else y
    x = g.conv_bn(x, "_conv_head", "_bn1")
    pooled = g.node("GlobalAveragePool", [x])
    g.nodes.append(helper.make_node("Flatten", [pooled], [OUTPUT_NAME], name="Flatten_features", axis=1))
    dim = lite_arch.HEAD_CHANNELS
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim])]

    fc_w, fc_b = g.take("_fc.weight"), g.take("_fc.bias")
    if logits:
        g.nodes.append(helper.make_node("Gemm", [OUTPUT_NAME, g.const("fc.w", fc_w.astype(np.float32)),
                                                 g.const("fc.b", fc_b.astype(np.float32))],
                                        [LOGITS_NAME], name="Gemm_logits", transB=1))
        outputs.append(helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", fc_w.shape[0]]))
    unused = sorted(set(state) - g.used)
    if unused:
        raise ValueError(f"the checkpoint has {len(unused)} tensors {name} does not use, e.g. {unused[:3]}: "
                         "is it the right variant?")

    graph = helper.make_graph(
        g.nodes, name.replace("-", "_"),
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        outputs, initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="lookalike", ir_version=IR_VERSION)
    checker.check_model(model)
    return model
