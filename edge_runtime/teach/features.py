"""Cut a float ONNX classifier at its features and put a new head on it.

The features are the input of the last weighted layer: walking back from the graph's output through
shape-only ops (Reshape, Flatten, Squeeze, Identity, Softmax...) to the first Gemm, MatMul or Conv whose
weight is a constant. A 1x1 Conv classifier (TF-converted MobileNets) counts: its input is the pooled
vector. Only the nodes the features need are kept, so the cut model costs what the backbone costs up
to there; the head is Flatten -> Gemm -> Softmax (or LpNormalization first, for imprinting).
"""

from __future__ import annotations

import numpy as np

from edge_runtime.util.errors import ModelError

PASS_THROUGH = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Softmax", "LogSoftmax",
                "Transpose", "Dropout", "Cast"}
WEIGHTED = {"Gemm", "MatMul", "Conv"}
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
             "MatMulInteger", "DynamicQuantizeLinear"}
FEATURES_NAME = "features"
OUTPUT_NAME = "probabilities"


def load(path: str):
    import onnx
    try:
        return onnx.load(path)
    except Exception as exc:     # onnx raises DecodeError, OSError...: all mean "not a model we can read"
        raise ModelError(path, f"cannot read it as ONNX: {type(exc).__name__}") from None


def _constants(graph) -> set[str]:
    names = {i.name for i in graph.initializer}
    names.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    return names


def refuse_quantised(model, path: str) -> None:
    ops = {n.op_type for n in model.graph.node} & QUANT_OPS
    if ops:
        raise ModelError(path, f"is a quantised (INT8) model ({', '.join(sorted(ops))}); train on its float "
                         f"version and quantise the result afterwards")


def find_features(model, path: str) -> str:
    """The input tensor of the last weighted layer (see the module docstring)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = _constants(graph)
    tensor = graph.output[0].name
    for _ in range(len(graph.node)):
        node = producer.get(tensor)
        if node is None:
            break
        if node.op_type in WEIGHTED and len(node.input) >= 2 and node.input[1] in consts:
            return node.input[0]
        if node.op_type == "Add" and any(i in consts for i in node.input):     # MatMul + Add bias
            tensor = next(i for i in node.input if i not in consts)
            continue
        if node.op_type not in PASS_THROUGH:
            break
        tensor = node.input[0]
    raise ModelError(path, "cannot find its classifier layer (a final Gemm, MatMul or 1x1 Conv): "
                     "name the features tensor with --features")


def cut(model, tensor: str, path: str):
    """A copy of `model` whose only output is `tensor` flattened to (batch, D), named FEATURES_NAME."""
    import onnx
    from onnx import helper

    graph = model.graph
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    if tensor not in produced:
        raise ModelError(path, f"has no tensor '{tensor}' (--features)")
    producer = {o: n for n in graph.node for o in n.output}
    keep, todo, seen = [], [tensor], set()
    while todo:      # the nodes `tensor` depends on, nothing else
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in {id(k) for k in keep}:
            keep.append(node)
            todo.extend(i for i in node.input if i)
    order = {id(n): i for i, n in enumerate(graph.node)}
    keep.sort(key=lambda n: order[id(n)])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    del out.graph.output[:]
    del out.graph.value_info[:]
    used = {i for n in keep for i in n.input}
    inits = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    out.graph.node.append(helper.make_node("Flatten", [tensor], [FEATURES_NAME], axis=1, name="teach_flatten"))
    out.graph.output.append(helper.make_tensor_value_info(FEATURES_NAME, onnx.TensorProto.FLOAT, None))
    return out


def batch_dim(model):
    """The backbone's batch axis as it is (a fixed 1, or a symbolic name), for the new output."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param if dim.dim_param else (dim.dim_value or "batch")


def with_head(cut_model, weight: np.ndarray, bias: np.ndarray, *, normalise: bool, batch):
    """`cut_model` + [LpNormalization] -> Gemm(weight (K, D), bias (K,)) -> Softmax, output OUTPUT_NAME."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(cut_model)
    g = out.graph
    del g.output[:]
    x = FEATURES_NAME
    if normalise:
        g.node.append(helper.make_node("LpNormalization", [x], ["teach_unit"], axis=1, p=2, name="teach_norm"))
        x = "teach_unit"
    g.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), "teach_head.weight"),
                          numpy_helper.from_array(bias.astype(np.float32), "teach_head.bias")])
    g.node.append(helper.make_node("Gemm", [x, "teach_head.weight", "teach_head.bias"], ["teach_logits"],
                                   transB=1, name="teach_head"))
    g.node.append(helper.make_node("Softmax", ["teach_logits"], [OUTPUT_NAME], axis=1, name="teach_softmax"))
    g.output.append(helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, [batch, weight.shape[0]]))
    del out.metadata_props[:]
    return out
