"""The model card (README.md) of an export: what it is, what goes in and out, how to run it."""

from __future__ import annotations

from typing import Any

from app.ml.exporting.spec import ONNX, PREPROCESS_FILE


def _shape(shape: list[Any]) -> str:
    return "(" + ", ".join(str(v) for v in shape) + ")"


def _ports(ports: list[dict[str, Any]], outputs: bool) -> list[str]:
    lines = []
    for p in ports:
        answer = (f" = the answer's `{p['answer']}` (atol {p['atol']:g})"
                  if outputs and p.get("answer") else "")
        lines.append(f"  - `{p['name']}`: {p['dtype']} {_shape(p['shape'])}{answer}")
    return lines


def _snippet(pre: dict[str, Any], endpoint: dict[str, Any]) -> str:
    inputs = ", ".join(f'"{p["name"]}": {p["name"]}' for p in endpoint["inputs"])
    if pre["format"] == ONNX:
        return "\n".join([
            "```python",
            "import numpy as np, onnxruntime as ort",
            f'session = ort.InferenceSession("{endpoint["file"]}")',
            (f"# {', '.join(p['name'] for p in endpoint['inputs'])}: numpy arrays as described "
            f"in {PREPROCESS_FILE}"),
            f"outputs = session.run(None, {{{inputs}}})",
            "```"])
    args = ", ".join(f"torch.from_numpy({p['name']})" for p in endpoint["inputs"])
    return "\n".join([
        "```python",
        "import torch",
        f'module = torch.jit.load("{endpoint["file"]}")',
        f"outputs = module({args})",
        "```"])


def model_card(pre: dict[str, Any]) -> str:
    """README.md of an export archive, from its preprocess.json."""
    inp = pre["input"]
    lines = [
        f"# {pre['algorithm']} model {pre['model_id']} ({pre['format']})", "",
        ("Exported by Pretrainer. Each file below answers one endpoint of the service, on the "
        "same raw input the service takes, with the same answer (to the tolerance below)."), "",
        "## Input", "",
        f"- kind: {inp['kind']}, dtype {inp.get('dtype', 'int64 token ids')}"]
    for key in ("layout", "features", "channel_order", "tokenizer", "max_length"):
        if key in inp:
            lines.append(f"- {key}: {inp[key]}")
    for step in inp.get("decode", []) + inp.get("tokenize", []):
        lines.append(f"- before the graph: {step}")
    for step in inp.get("in_graph", []):
        lines.append(f"- inside the graph: {step}")
    lines += ["", "## Endpoints", ""]
    for name, ep in pre["endpoints"].items():
        lines += [f"### {name}: `{ep['file']}`", "", "- inputs:", *_ports(ep["inputs"], False),
                  "- outputs:", *_ports(ep["outputs"], True)]
        lines += [f"- {note}" for note in ep.get("notes", [])]
        lines += ["", _snippet(pre, ep), ""]
    if "classes" in pre:
        lines += ["## Classes", "", f"In the order of the probabilities: {pre['classes']}", ""]
    if "noise" in pre:
        lines += ["## Noise for generate", "", (f"{pre['noise']['distribution']}; the service "
                  f"draws it as: `{pre['noise']['service_draws']}`"), ""]
    lines += ["## Tolerance", "",
              ("The outputs equal the service's predict/embed/generate answers on the same "
              f"input within the atol beside each output: {pre['tolerance']}."), "",
              f"Everything above, machine-readable: `{PREPROCESS_FILE}`.", ""]
    return "\n".join(lines)
