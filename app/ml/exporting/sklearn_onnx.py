"""scikit-learn models as ONNX: the scaler and the estimator in one graph that takes raw rows.

skl2onnx converts a Pipeline(StandardScaler, estimator) for the estimators it knows; what it
has no converter for but is a few steps (PCA's reconstruction, distances to an agglomerative
clustering's centroids, LDA's probabilities and components together) is written here as an ONNX graph of its own. The graph keeps the model's dtype (float64 rows stay float64), so its
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
from app.ml.unsupervised.agglomerative import AgglomerativeModel
from app.ml.unsupervised.gmm import GMMModel
from app.ml.unsupervised.kmeans import KMeansModel
from app.ml.unsupervised.lda import LDAModel
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


class Graph:
    """An ONNX graph written by hand over a model's raw rows, in the model's dtype."""

    def __init__(self, model: UnsupervisedModel) -> None:
        self.model = model
        self.dtype = np.dtype(model.dtype)
        self.elem = TensorProto.DOUBLE if self.dtype == np.float64 else TensorProto.FLOAT
        self.nodes: list[onnx.NodeProto] = []
        self.consts: list[onnx.TensorProto] = []

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        """A constant (the model's dtype unless told), by its name."""
        array = np.asarray(value, dtype=dtype or self.dtype)
        self.consts.append(numpy_helper.from_array(array, name=name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        """One node; its output's name."""
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def scaled(self) -> str:
        """The rows as the estimator takes them: standardised when the model was trained so."""
        scaler = self.model.scaler
        if scaler is None:
            return INPUT
        centred = self.op("Sub", [INPUT, self.const("scaler_mean", scaler.mean_)], "centred")
        return self.op("Div", [centred, self.const("scaler_scale", scaler.scale_)], "scaled")

    def unscaled(self, rows: str, output: str) -> str:
        """Standardised rows back in the input's units (unchanged without a scaler)."""
        scaler = self.model.scaler
        if scaler is None:
            return self.op("Identity", [rows], output)
        times = self.op("Mul", [rows, self.const("scaler_scale", scaler.scale_)], "times_scale")
        return self.op("Add", [times, self.const("scaler_mean", scaler.mean_)], output)

    def built(self, name: str, outputs: list[tuple[str, Any, list[Any]]]) -> onnx.ModelProto:
        """The checked model: input `rows`, outputs (name, element type or None, shape)."""
        d = self.model.n_features_in
        unique = {c.name: c for c in self.consts}  # a constant asked for twice is kept once
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info(INPUT, self.elem, [BATCH, d])],
            [helper.make_tensor_value_info(n, elem or self.elem, shape)
             for n, elem, shape in outputs],
            initializer=list(unique.values()))
        made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        onnx.checker.check_model(made)
        return made


def pca_reconstruction(model: PCAModel) -> onnx.ModelProto:
    """PCAModel.predict as an ONNX graph: scale, project, rebuild, unscale, mean squared error.

    Whitening divides the scores by sqrt(explained variance) and the inverse multiplies them
    back: the reconstruction is the same without either step.
    """
    pca_, g = model.estimator, Graph(model)
    mean = g.const("pca_mean", pca_.mean_)
    offset = g.op("Sub", [g.scaled(), mean], "offset")
    scores = g.op("MatMul", [offset, g.const("components_t", pca_.components_.T)], "scores")
    rebuilt = g.op("MatMul", [scores, g.const("components", pca_.components_)], "rebuilt_offset")
    recon = g.unscaled(g.op("Add", [rebuilt, mean], "rebuilt"), "predictions")
    residual = g.op("Sub", [INPUT, recon], "residual")
    squared = g.op("Mul", [residual, residual], "squared")
    g.op("ReduceMean", [squared, g.const("axes", [1], np.int64)], "reconstruction_error",
         keepdims=0)
    d = model.n_features_in
    return g.built("pca_predict", [("predictions", None, [BATCH, d]),
                                   ("reconstruction_error", None, [BATCH])])


def centroid_distances(model: AgglomerativeModel) -> onnx.ModelProto:
    """AgglomerativeModel's answers as an ONNX graph: the distance of each (scaled) row to each
    centroid in the trained metric (embed), and the nearest centroid's index (predict)."""
    g = Graph(model)
    rows, centroids = g.scaled(), model.centroids
    metric = model.params["metric"]
    if metric == "cosine":  # 1 - cos, clipped to [0, 2] as scikit-learn does
        unit = g.op("LpNormalization", [rows], "unit_rows", axis=1, p=2)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        c_unit = g.const("unit_centroids_t", (centroids / np.where(norms > 0, norms, 1)).T)
        cos = g.op("MatMul", [unit, c_unit], "cosine")
        dist = g.op("Sub", [g.const("one", 1.0), cos], "one_minus_cosine")
        g.op("Clip", [dist, g.const("zero", 0.0), g.const("two", 2.0)], "embeddings")
    else:
        per_row = g.op("Unsqueeze", [rows, g.const("axis1", [1], np.int64)], "rows_3d")
        diff = g.op("Sub", [per_row, g.const("centroids", centroids)], "differences")
        sum_axes = g.const("axis2", [2], np.int64)
        if metric == "manhattan":
            g.op("ReduceSum", [g.op("Abs", [diff], "absolute"), sum_axes], "embeddings",
                 keepdims=0)
        else:
            squared = g.op("ReduceSum", [g.op("Mul", [diff, diff], "squares"), sum_axes],
                           "squared_distances", keepdims=0)
            g.op("Sqrt", [squared], "embeddings")
    g.op("ArgMin", ["embeddings"], "predictions", axis=1, keepdims=0)
    k = int(centroids.shape[0])
    return g.built("centroid_distances", [("predictions", TensorProto.INT64, [BATCH]),
                                          ("embeddings", None, [BATCH, k])])


def agglomerative(model: AgglomerativeModel) -> Export:
    """predict (nearest centroid) and embed (distances to the centroids): one graph."""
    k = int(model.centroids.shape[0])
    rows = _rows(model)
    predict = Endpoint(PREDICT, MODEL_FILE, [rows], [Port("predictions", "int64", [BATCH],
                                                          "predictions", EXACT)])
    embed = Endpoint(EMBED, MODEL_FILE, [rows], [Port("embeddings", model.dtype, [BATCH, k],
                                                      "embeddings", _atol(model))],
                     [(f"embeddings: the {model.params['metric']} distance of each row to each "
                      "cluster's centroid (the mean of its training rows)")])
    graph = centroid_distances(model)
    return Export({MODEL_FILE: graph.SerializeToString()}, [predict, embed], rows_input(model))


def lda_graph(model: LDAModel) -> onnx.ModelProto:
    """LDAModel's answers as one ONNX graph: the class probabilities (scikit-learn's
    predict_proba: a logistic of the one decision value for two classes, else a softmax of
    the linear decision function) and the discriminant components (its transform)."""
    lda, g = model.estimator, Graph(model)
    rows = g.scaled()
    coef = np.asarray(lda.coef_)
    decision = g.op("Add", [g.op("MatMul", [rows, g.const("coef_t", coef.T)], "linear"),
                            g.const("intercept", lda.intercept_)], "decision")
    if coef.shape[0] == 1:  # two classes: P(second) = logistic(decision)
        second = g.op("Sigmoid", [decision], "p_second")
        first = g.op("Sub", [g.const("one", 1.0), second], "p_first")
        g.op("Concat", [first, second], "probabilities", axis=1)
    else:
        g.op("Softmax", [decision], "probabilities", axis=1)
    g.op("ArgMax", ["probabilities"], "predictions", axis=1, keepdims=0)
    k = int(lda._max_components)
    scalings = np.asarray(lda.scalings_)[:, :k]
    projected = rows if lda.solver != "svd" else g.op(
        "Sub", [rows, g.const("xbar", lda.xbar_)], "centred_on_xbar")
    g.op("MatMul", [projected, g.const("scalings", scalings)], "embeddings")
    return g.built("lda", [("predictions", TensorProto.INT64, [BATCH]),
                           ("probabilities", None, [BATCH, len(model.classes)]),
                           ("embeddings", None, [BATCH, k])])


def lda(model: LDAModel) -> Export:
    """predict (class index and probabilities; the classes in preprocess.json) and embed (the
    discriminant components): one graph."""
    rows, n = _rows(model), len(model.classes)
    graph = lda_graph(model)
    predict = Endpoint(PREDICT, MODEL_FILE, [rows], [
        Port("probabilities", model.dtype, [BATCH, n], "probabilities", _atol(model))],
        [("predictions = classes[argmax(probabilities)] (classes in preprocess.json); the "
          "graph's `predictions` output is that index")])
    k = int(model.estimator._max_components)
    embed = Endpoint(EMBED, MODEL_FILE, [rows], [
        Port("embeddings", model.dtype, [BATCH, k], "embeddings", _atol(model))],
        ["embeddings: the discriminant components (scikit-learn's transform)"])
    return Export({MODEL_FILE: graph.SerializeToString()}, [predict, embed], rows_input(model),
                  {"classes": list(model.class_values)})


# Which converter serves which trained class (subclasses too: minibatch_kmeans is a KMeansModel).
CONVERTERS: tuple[tuple[type[UnsupervisedModel], Any], ...] = (
    (KMeansModel, kmeans), (GMMModel, gmm), (PCAModel, pca),
    (AgglomerativeModel, agglomerative), (LDAModel, lda))


def converter(model: UnsupervisedModel) -> Any:
    """The function that exports this model, or None when none can."""
    return next((fn for cls, fn in CONVERTERS if isinstance(model, cls)), None)
