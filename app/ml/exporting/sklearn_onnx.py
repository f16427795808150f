"""scikit-learn models as ONNX: the scaler and the estimator in one graph that takes raw rows.

skl2onnx converts a Pipeline(StandardScaler, estimator) for the estimators it knows; what it
has no converter for but is a few linear steps (PCA's reconstruction) is written here as an
ONNX graph of its own. The graph keeps the model's dtype (float64 rows stay float64), so its
answers equal the service's to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.pipeline import Pipeline

from app.ml.base import EMBED, PREDICT
from app.ml.exporting.spec import BATCH, EXACT, FLOAT64_ATOL, NETWORK_ATOL, Endpoint, Export, Port
from app.ml.unsupervised._common import UnsupervisedModel
from app.ml.unsupervised.gmm import GMMModel
from app.ml.unsupervised.kmeans import KMeansModel
from app.ml.unsupervised.pca import PCAModel

MODEL_FILE = "model.onnx"
OPSET = 18
INPUT = "rows"


def _pipeline(model: UnsupervisedModel) -> Any:
    """The fitted estimator, behind the fitted scaler when the model standardises."""
    estimator = model.estimator  # type: ignore[attr-defined]
    if model.scaler is None:
        return estimator
    return Pipeline([("scaler", model.scaler), ("estimator", estimator)])


def _convert(model: UnsupervisedModel, names: dict[str, str]) -> onnx.ModelProto:
    """skl2onnx's graph of the model's pipeline, its outputs renamed by names."""
    from skl2onnx import to_onnx

    example = np.zeros((1, model.n_features_in), dtype=model.dtype)
    converted = to_onnx(_pipeline(model), example, target_opset=OPSET,
                        initial_types=[(INPUT, _tensor_type(model))])
    return _rename(converted, names)


def _tensor_type(model: UnsupervisedModel) -> Any:
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    kind = DoubleTensorType if model.dtype == "float64" else FloatTensorType
    return kind([None, model.n_features_in])


def _rename(model: onnx.ModelProto, names: dict[str, str]) -> onnx.ModelProto:
    """Tensors renamed everywhere they appear (node inputs and outputs, graph outputs)."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for out in graph.output:
        out.name = names.get(out.name, out.name)
    return model


def _flattened(model: onnx.ModelProto, column: str, name: str) -> onnx.ModelProto:
    """The graph output `column`, an (n, 1) tensor, replaced by `name` of shape (n,)."""
    graph = model.graph
    out = next(o for o in graph.output if o.name == column)
    elem = out.type.tensor_type.elem_type
    graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64),
                                                     name=f"{name}_shape"))
    graph.node.append(helper.make_node("Reshape", [column, f"{name}_shape"], [name]))
    graph.output.remove(out)
    graph.output.insert(0, helper.make_tensor_value_info(name, elem, [BATCH]))
    return model


def _atol(model: UnsupervisedModel) -> float:
    """Float outputs are computed in the model's dtype, as the service computes them."""
    return FLOAT64_ATOL if model.dtype == "float64" else NETWORK_ATOL


def _rows(model: UnsupervisedModel) -> Port:
    return Port(INPUT, model.dtype, [BATCH, model.n_features_in])


def rows_input(model: UnsupervisedModel) -> dict[str, Any]:
    """preprocess.json's input: raw rows; the scaler (if any) is inside the graph."""
    scaler = model.scaler
    described: dict[str, Any] = {
        "kind": "tabular", "dtype": model.dtype,
        "layout": "rows (batch, features), the features in the order of the model's "
                  "input_schema",
        "in_graph": ["standardisation (x - mean) / scale"] if scaler is not None else []}
    if scaler is not None:
        described.update(mean=scaler.mean_.tolist(), scale=scaler.scale_.tolist())
    return described


def kmeans(model: KMeansModel) -> Export:
    """predict (nearest centroid) and embed (distances to every centroid): one graph."""
    graph = _convert(model, {"label": "predictions", "scores": "embeddings"})
    k = int(model.estimator.n_clusters)
    rows = _rows(model)
    predict = Endpoint(PREDICT, MODEL_FILE, [rows], [Port("predictions", "int64", [BATCH],
                                                          "predictions", EXACT)])
    embed = Endpoint(EMBED, MODEL_FILE, [rows], [Port("embeddings", model.dtype, [BATCH, k],
                                                      "embeddings", _atol(model))],
                     ["embeddings: the Euclidean distance of each row to each centroid"])
    return Export({MODEL_FILE: graph.SerializeToString()}, [predict, embed], rows_input(model))


def gmm(model: GMMModel) -> Export:
    """predict (component and probabilities) and embed (the probabilities): one graph."""
    # skl2onnx's GaussianMixture label is a column (n, 1); the service answers a list (n,).
    graph = _flattened(_convert(model, {}), "label", "predictions")
    k = int(model.estimator.n_components)
    rows = _rows(model)
    probs = Port("probabilities", model.dtype, [BATCH, k], "probabilities", _atol(model))
    predict = Endpoint(PREDICT, MODEL_FILE, [rows], [
        Port("predictions", "int64", [BATCH], "predictions", EXACT), probs])
    embed = Endpoint(EMBED, MODEL_FILE, [rows], [
        Port("probabilities", model.dtype, [BATCH, k], "embeddings", _atol(model))])
    return Export({MODEL_FILE: graph.SerializeToString()}, [predict, embed], rows_input(model))


def pca(model: PCAModel) -> Export:
    """embed (component scores, skl2onnx) and predict (reconstruction and its error)."""
    embed_graph = _convert(model, {"variable": "embeddings"})
    k = int(model.estimator.n_components_)
    rows = _rows(model)
    embed = Endpoint(EMBED, "embed.onnx", [rows], [Port("embeddings", model.dtype, [BATCH, k],
                                                        "embeddings", _atol(model))])
    d = model.n_features_in
    predict = Endpoint(PREDICT, "predict.onnx", [rows], [
        Port("predictions", model.dtype, [BATCH, d], "predictions", _atol(model)),
        Port("reconstruction_error", model.dtype, [BATCH], "reconstruction_error", _atol(model))],
        [("predictions: each row rebuilt from its components, in the input's units; "
         "reconstruction_error: the mean squared difference to the row")])
    files = {"embed.onnx": embed_graph.SerializeToString(),
             "predict.onnx": pca_reconstruction(model).SerializeToString()}
    return Export(files, [predict, embed], rows_input(model))


def pca_reconstruction(model: PCAModel) -> onnx.ModelProto:
    """PCAModel.predict as an ONNX graph: scale, project, rebuild, unscale, mean squared error.

    Whitening divides the scores by sqrt(explained variance) and the inverse multiplies them
    back: the reconstruction is the same without either step.
    """
    pca_ = model.estimator
    dtype = np.dtype(model.dtype)
    consts: dict[str, np.ndarray] = {
        "pca_mean": pca_.mean_, "components_t": pca_.components_.T,
        "components": pca_.components_, "axes": np.array([1], dtype=np.int64)}
    nodes = []
    src = INPUT
    if model.scaler is not None:
        consts.update(scaler_mean=model.scaler.mean_, scaler_scale=model.scaler.scale_)
        nodes += [helper.make_node("Sub", [INPUT, "scaler_mean"], ["centred"]),
                  helper.make_node("Div", ["centred", "scaler_scale"], ["scaled"])]
        src = "scaled"
    nodes += [helper.make_node("Sub", [src, "pca_mean"], ["offset"]),
              helper.make_node("MatMul", ["offset", "components_t"], ["scores"]),
              helper.make_node("MatMul", ["scores", "components"], ["rebuilt_offset"])]
    if model.scaler is not None:
        nodes += [helper.make_node("Add", ["rebuilt_offset", "pca_mean"], ["rebuilt_scaled"]),
                  helper.make_node("Mul", ["rebuilt_scaled", "scaler_scale"], ["rebuilt_units"]),
                  helper.make_node("Add", ["rebuilt_units", "scaler_mean"], ["predictions"])]
    else:
        nodes.append(helper.make_node("Add", ["rebuilt_offset", "pca_mean"], ["predictions"]))
    nodes += [helper.make_node("Sub", [INPUT, "predictions"], ["residual"]),
              helper.make_node("Mul", ["residual", "residual"], ["squared"]),
              helper.make_node("ReduceMean", ["squared", "axes"], ["reconstruction_error"],
                               keepdims=0)]
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    d = model.n_features_in
    graph = helper.make_graph(
        nodes, "pca_predict",
        [helper.make_tensor_value_info(INPUT, elem, [BATCH, d])],
        [helper.make_tensor_value_info("predictions", elem, [BATCH, d]),
         helper.make_tensor_value_info("reconstruction_error", elem, [BATCH])],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k == "axes"
                                                        else dtype), name=k)
                     for k, v in consts.items()])
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(made)
    return made


# Which converter serves which trained class (subclasses too: minibatch_kmeans is a KMeansModel).
CONVERTERS: tuple[tuple[type[UnsupervisedModel], Any], ...] = (
    (KMeansModel, kmeans), (GMMModel, gmm), (PCAModel, pca))


def converter(model: UnsupervisedModel) -> Any:
    """The function that exports this model, or None when none can."""
    return next((fn for cls, fn in CONVERTERS if isinstance(model, cls)), None)
