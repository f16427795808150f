"""Client commands of `pretrainer`: datasets, train, jobs, models, predict, embed, generate.

They talk to a running service over HTTP only (PRETRAINER_URL, PRETRAINER_API_KEY, or --url and
--api-key), so they work against a remote one and import nothing of the server.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pretrainer_client.calls import (
    BATCH_FORMATS,
    BATCH_OUTPUTS,
    EXPORT_FORMATS,
    format_of,
    settings,
)
from pretrainer_client.client import Client
from pretrainer_client.errors import JobFailed, PretrainerError
from pretrainer_client.progress import describe

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
Handler = Callable[[Client, argparse.Namespace], Any]


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=None, help="service URL (env PRETRAINER_URL, default "
                                               "http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=None, help="API key (env PRETRAINER_API_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    return p


def _leaf(sub: Any, name: str, text: str, handler: Handler, common: argparse.ArgumentParser,
          ) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=text, description=text,
                                                parents=[common])
    p.set_defaults(client_run=handler)
    return p


def register(sub: Any) -> None:
    """Add the client commands to the `pretrainer` sub-command parser."""
    common = _common()
    datasets = sub.add_parser("datasets", help="upload, list, show, delete datasets").add_subparsers(
        dest="action", required=True)
    upload = _leaf(datasets, "upload", "upload a file as a dataset (with a progress bar)",
                   _ds_upload, common)
    upload.add_argument("file", type=Path)
    upload.add_argument("--name", default=None)
    way = upload.add_mutually_exclusive_group()
    way.add_argument("--resumable", dest="resumable", action="store_true", default=None,
                     help="over tus, resuming after a dropped connection (default for files "
                          "of 64 MiB or more)")
    way.add_argument("--no-resumable", dest="resumable", action="store_false",
                     help="one multipart request")
    _leaf(datasets, "list", "list datasets", _ds_list, common)
    _leaf(datasets, "show", "show one dataset", _ds_show, common).add_argument("id")
    _leaf(datasets, "delete", "delete a dataset", _ds_delete, common).add_argument("id")

    train = _leaf(sub, "train", "start a training job (and --follow it)", _train, common)
    train.add_argument("algorithm")
    train.add_argument("--dataset", required=True, help="dataset id")
    train.add_argument("--param", action="append", default=[], metavar="K=V",
                       help="a param; V is read as JSON when it parses (3, 0.1, true, [64,32])")
    train.add_argument("--features", default=None, help="comma-separated column names")
    train.add_argument("--target", default=None)
    train.add_argument("--name", default=None)
    train.add_argument("--follow", action="store_true", help="follow it with a live progress bar")

    jobs = sub.add_parser("jobs", help="list, show, follow, cancel jobs").add_subparsers(
        dest="action", required=True)
    _leaf(jobs, "list", "list jobs", _jobs_list, common).add_argument("--status", default=None)
    _leaf(jobs, "show", "show one job", _jobs_show, common).add_argument("id")
    _leaf(jobs, "follow", "follow a job to its end", _jobs_follow, common).add_argument("id")
    _leaf(jobs, "cancel", "cancel a job", _jobs_cancel, common).add_argument("id")
    plot = _leaf(jobs, "plot", "save the job's loss curve as PNG", _jobs_plot, common)
    plot.add_argument("id")
    plot.add_argument("-o", "--output", type=Path, required=True)

    models = sub.add_parser("models", help="list, show, delete models").add_subparsers(
        dest="action", required=True)
    _leaf(models, "list", "list models", _models_list, common)
    _leaf(models, "show", "show one model", _models_show, common).add_argument("id")
    _leaf(models, "delete", "delete a model", _models_delete, common).add_argument("id")
    plot = _leaf(models, "plot", "save a model picture as PNG", _models_plot, common)
    plot.add_argument("id")
    plot.add_argument("kind", choices=["embedding", "confusion"])
    plot.add_argument("-o", "--output", type=Path, required=True)
    _leaf(models, "labels", "a clustering's own labels of its training rows",
          _models_labels, common).add_argument("id")
    again = _leaf(models, "reproduce", "retrain a model from its reproducibility record and "
                  "check the artifact is identical", _models_reproduce, common)
    again.add_argument("id")
    again.add_argument("--follow", action="store_true", help="follow it with a live progress "
                       "bar, then say whether the artifact is identical")
    _register_neighbors(sub, models, common)
    ev = _leaf(sub, "evaluate", "score a model on an uploaded test set", _evaluate, common)
    ev.add_argument("model")
    ev.add_argument("dataset", help="dataset id of the test set")
    ev.add_argument("--target", default=None, help="label column (default: the training job's)")

    algos = _leaf(sub, "algorithms", "list the algorithms and what they answer; "
                  "`algorithms show NAME` for one's params", _algorithms, common)
    actions = algos.add_subparsers(dest="action", required=False)
    _leaf(actions, "list", "list the algorithms and what they answer", _algorithms, common)
    _leaf(actions, "show", "one algorithm's params: type, default, bounds and description",
          _algorithm_show, common).add_argument("name")
    projects = sub.add_parser("projects", help="your project and its quotas").add_subparsers(
        dest="action", required=True)
    _leaf(projects, "me", "the API key's project: each quota's limit and use", _project, common)
    for name, handler in (("predict", _predict), ("embed", _embed)):
        p = _leaf(sub, name, f"{name} for the rows of FILE (CSV with a header, .npy, .json, "
                  ".jsonl) or for image files", handler, common)
        p.add_argument("model")
        p.add_argument("file", nargs="+", help="a data file, '-' for JSON on stdin, or images")
    _register_batch(sub, jobs, common)
    gen = _leaf(sub, "generate", "draw samples from a generative model", _generate, common)
    gen.add_argument("model")
    gen.add_argument("-n", type=int, default=1)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("-o", "--output", type=Path, default=None, metavar="DIR",
                     help="write the samples into DIR: PNG files for image models, "
                          "samples.csv (or samples.npy with --format npy) otherwise")
    gen.add_argument("--format", choices=["csv", "npy"], default="csv",
                     help="the file of non-image samples written with -o (default csv)")
    _register_sweeps(sub, common)
    _registry_commands(sub, models, common)


def _registry_commands(sub: Any, models: Any, common: argparse.ArgumentParser) -> None:
    """models register / alias / unalias, and registry list / show."""
    reg = _leaf(models, "register", "register a model (id or NAME@VERSION/ALIAS) under NAME as "
                "its next version", _registry_register, common)
    reg.add_argument("name")
    reg.add_argument("model")
    alias = _leaf(models, "alias", "point an alias of NAME (production, staging, …) at VERSION",
                  _registry_alias, common)
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    unalias = _leaf(models, "unalias", "remove an alias of NAME", _registry_unalias, common)
    unalias.add_argument("name")
    unalias.add_argument("alias")
    registry = sub.add_parser("registry", help="model names, versions and aliases"
                              ).add_subparsers(dest="action", required=True)
    _leaf(registry, "list", "list registered names", _registry_list, common)
    _leaf(registry, "show", "a name's versions, aliases and alias history", _registry_show,
          common).add_argument("name")
    exp = _leaf(sub, "export", "download a model as ONNX or TorchScript files with its "
                "preprocessing and model card (a ZIP)", _export, common)
    exp.add_argument("model")
    exp.add_argument("--format", choices=list(EXPORT_FORMATS), default="onnx",
                     help="onnx (default) or torchscript (PyTorch models)")
    exp.add_argument("-o", "--output", type=Path, default=None, metavar="PATH",
                     help="where to write the ZIP (default <model>.<format>.zip here)")


def _register_batch(sub: Any, jobs: Any, common: argparse.ArgumentParser) -> None:
    """`batch MODEL DATASET -o FILE [--follow]`, and `jobs result ID -o FILE`."""
    b = _leaf(sub, "batch", "score a whole dataset with a model, as a job; --follow waits for "
              "it and saves the result to -o", _batch, common)
    b.add_argument("model")
    b.add_argument("dataset", help="dataset id")
    b.add_argument("-o", dest="out", type=Path, default=None, metavar="FILE",
                   help="where --follow saves the result; its suffix (.parquet, .csv, .npy) "
                        "is the format unless --format says")
    b.add_argument("--output", choices=list(BATCH_OUTPUTS), default="predict",
                   help="predict (labels, probabilities) or embed (vectors); default predict")
    b.add_argument("--format", choices=list(BATCH_FORMATS), default=None,
                   help="the result file's format (default: from -o, else parquet)")
    b.add_argument("--name", default=None)
    b.add_argument("--follow", action="store_true", help="follow it, then download the result")
    result = _leaf(jobs, "result", "save a finished batch job's result file", _jobs_result,
                   common)
    result.add_argument("id")
    result.add_argument("-o", dest="out", type=Path, required=True, metavar="FILE")
    register_compare(sub, common)


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; errors become one line on stderr and exit status 1."""
    try:
        with Client(args.url, args.api_key) as client:
            result = args.client_run(client, args)
    except PretrainerError as exc:
        _fail(exc.status, {"status": exc.status, "type": exc.type, "title": exc.title,
                           "detail": exc.detail, "errors": exc.errors}, args.json)
        return 1
    except JobFailed as exc:
        _output(exc.job.raw, args.json, _job_view)
        return 1
    except (httpx.HTTPError, OSError, ValueError) as exc:  # unreachable service, unreadable file
        where = f" ({settings(args.url, None)[0]})" if isinstance(exc, httpx.HTTPError) else ""
        _fail(0, {"title": type(exc).__name__, "detail": f"{exc}{where}"}, args.json)
        return 1
    return 0 if result is None else int(result)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pretrainer_client …`: the client commands without the server installed."""
    p = argparse.ArgumentParser(prog="pretrainer", description=__doc__)
    register(p.add_subparsers(dest="command", required=True))
    return run(p.parse_args(argv))


# ------------------------------------------------------------------------------------ output


def _fail(status: int, problem: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(problem), file=sys.stderr)
        return
    print(f"error: {problem.get('title')}: {problem.get('detail')}", file=sys.stderr)
    for e in problem.get("errors") or []:
        print(f"  {e.get('field')}: {e.get('message')}", file=sys.stderr)


def _output(data: Any, as_json: bool, view: Callable[[Any], None]) -> None:
    if as_json:
        print(json.dumps(data, default=_jsonable))
    else:
        view(data)


def _jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else str(value)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_cell(v) for v in row))
        return
    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, no_wrap=i == 0)  # ids are copied from here: never cut them
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    # Piped output is not cut to 80 columns: ids and metrics stay whole for grep and less.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        text = json.dumps(v, default=_jsonable)
        return text if len(text) <= 60 else text[:57] + "..."
    return "" if v is None else str(v)


def _fields(title: str, data: dict[str, Any]) -> None:
    _table(title, ["field", "value"], [[k, v] for k, v in data.items()])


def _job_view(job: dict[str, Any]) -> None:
    _fields(f"job {job['id']}", {k: job.get(k) for k in (
        "status", "algorithm", "dataset_id", "params", "progress", "model_id", "error",
        "created_at", "finished_at")})
    if job.get("metrics"):
        _fields("metrics", job["metrics"])


# ---------------------------------------------------------------------------------- commands


def _ds_upload(client: Client, args: argparse.Namespace) -> None:
    ds = client.upload(args.file, name=args.name, progress=not args.json,
                       resumable=args.resumable)
    _output(ds.raw, args.json, lambda d: _fields(f"dataset {d['id']}", {
        k: d.get(k) for k in ("id", "name", "kind", "format", "n_rows", "columns", "size_bytes")}))


def _ds_list(client: Client, args: argparse.Namespace) -> None:
    page = client.datasets(limit=500)
    _output([d.raw for d in page.items], args.json, lambda items: _table(
        f"datasets ({page.total})", ["id", "name", "kind", "format", "rows", "columns", "created"],
        [[d["id"], d["name"], d["kind"], d["format"], d["n_rows"],
          d.get("n_columns", len(d["columns"])), d["created_at"]] for d in items]))


def _ds_show(client: Client, args: argparse.Namespace) -> None:
    _output(client.dataset(args.id).raw, args.json, lambda d: _fields(f"dataset {d['id']}", d))


def _ds_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_dataset(args.id)
    _output({"deleted": args.id}, args.json, lambda d: print(f"deleted {args.id}"))


def parse_param(text: str) -> tuple[str, Any]:
    """'k=v' as (k, v): v read as JSON when it parses, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--param takes K=V, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _train(client: Client, args: argparse.Namespace) -> None:
    params = dict(parse_param(p) for p in args.param)
    features = args.features.split(",") if args.features else None
    job = client.submit(args.algorithm, args.dataset, params, features=features,
                        target=args.target, name=args.name)
    left = job.raw.get("metrics", {}).get("left_out_columns")
    if left and not args.json:
        print(f"note: left out {', '.join(left)} (named like a label or an id); name them in "
              "--features to train on them", file=sys.stderr)
    if args.follow:
        job = client.follow(job, progress=not args.json, raise_on_failure=True)
    _output(job.raw, args.json, _job_view)


def _jobs_list(client: Client, args: argparse.Namespace) -> None:
    page = client.jobs(status=args.status, limit=500)
    _output([j.raw for j in page.items], args.json, lambda items: _table(
        f"jobs ({page.total})", ["id", "algorithm", "status", "progress", "last epoch", "model",
                                 "created"],
        [[j["id"], j["algorithm"], j["status"], j["progress"],
          describe(j["history"][-1]) if j["history"] else "", j["model_id"], j["created_at"]]
         for j in items]))


def _jobs_show(client: Client, args: argparse.Namespace) -> None:
    _output(client.job(args.id).raw, args.json, _job_view)


def _jobs_follow(client: Client, args: argparse.Namespace) -> None:
    _output(client.follow(args.id, progress=not args.json).raw, args.json, _job_view)


def _jobs_cancel(client: Client, args: argparse.Namespace) -> None:
    _output(client.cancel(args.id).raw, args.json, _job_view)


def _save(data: bytes, path: Path, as_json: bool) -> None:
    path.write_bytes(data)
    _output({"saved": str(path), "bytes": len(data)}, as_json,
            lambda d: print(f"saved {d['saved']} ({d['bytes']} bytes)"))


def _jobs_plot(client: Client, args: argparse.Namespace) -> None:
    _save(client.loss_plot(args.id), args.output, args.json)


def _models_list(client: Client, args: argparse.Namespace) -> None:
    page = client.models(limit=500)
    _output([m.raw for m in page.items], args.json, lambda items: _table(
        f"models ({page.total})", ["id", "algorithm", "family", "capabilities", "metrics",
                                   "created"],
        [[m["id"], m["algorithm"], m["family"], ", ".join(m["capabilities"]), m["metrics"],
          m["created_at"]] for m in items]))


def _models_show(client: Client, args: argparse.Namespace) -> None:
    def view(m: dict[str, Any]) -> None:
        _fields(f"model {m['id']}", {k: v for k, v in m.items() if k != "metrics"})
        _fields("metrics", m["metrics"])
    _output(client.model(args.id).raw, args.json, view)


def _models_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_model(args.id)
    _output({"deleted": args.id}, args.json, lambda d: print(f"deleted {args.id}"))


def _models_plot(client: Client, args: argparse.Namespace) -> None:
    _save(client.model_plot(args.id, args.kind), args.output, args.json)


def _models_labels(client: Client, args: argparse.Namespace) -> None:
    labels = client.training_labels(args.id)
    _output({"labels": labels.tolist()}, args.json, lambda d: _table(
        f"training labels ({len(labels)} rows)", ["row", "label"],
        [[i, v] for i, v in enumerate(d["labels"])]))


def _models_reproduce(client: Client, args: argparse.Namespace) -> None:
    job = client.reproduce(args.id)
    if args.follow:
        job = client.follow(job, progress=not args.json, raise_on_failure=True)
    _output(job.raw, args.json, _job_view)
    if args.follow and not args.json:
        verdict = "identical" if job.metrics.get("identical") else "differs"
        print(f"{verdict}: max_abs_diff {job.metrics.get('max_abs_diff')}")


def _evaluate(client: Client, args: argparse.Namespace) -> None:
    out = client.evaluate(args.model, args.dataset, target=args.target)
    _output(out, args.json, lambda d: (
        _fields(f"model {d['model_id']} on {d['dataset_id']} ({d['n_rows']} rows, target "
                f"{d['target']})", d["metrics"])))


def _algorithms(client: Client, args: argparse.Namespace) -> None:
    algos = client.algorithms()
    _output([a.raw for a in algos], args.json, lambda items: _table(
        "algorithms", ["name", "family", "data kinds", "answers", "description"],
        [[a["name"], a["family"], ", ".join(a["data_kinds"]), ", ".join(a["capabilities"]),
          a["description"]] for a in items]))


def _algorithm_show(client: Client, args: argparse.Namespace) -> None:
    algo = client.algorithm(args.name)

    def view(a: dict[str, Any]) -> None:
        _fields(f"algorithm {a['name']}", {k: a.get(k) for k in (
            "name", "family", "data_kinds", "capabilities", "description")})
        _table(f"params of {a['name']}", ["param", "type", "default", "bounds", "description"],
               param_rows(a["params_schema"]))
    _output(algo.raw, args.json, view)


def param_rows(schema: dict[str, Any]) -> list[list[str]]:
    """One row per param of a JSON Schema: name, type, default, bounds and description."""
    defs = schema.get("$defs", {})
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        resolved = _resolve(prop, defs)
        default = json.dumps(prop["default"]) if "default" in prop else (
            "(required)" if name in required else "")
        rows.append([name, _type_of(resolved, defs), default, _bounds(resolved, defs),
                     prop.get("description") or resolved.get("description", "")])
    return rows


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref") or next((p["$ref"] for p in prop.get("allOf", []) if "$ref" in p), None)
    if ref:
        return {**defs.get(ref.rsplit("/", 1)[-1], {}), **{k: v for k, v in prop.items()
                                                          if k not in ("$ref", "allOf")}}
    return prop


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type_of(_resolve(p, defs), defs) for p in prop["anyOf"])
    kind = prop.get("type", "object" if "properties" in prop else "any")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"array of {_type_of(_resolve(prop['items'], defs), defs)}"
    return str(kind)


_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
           ("exclusiveMaximum", "<"), ("minItems", "items >="), ("maxItems", "items <="),
           ("minLength", "length >="), ("maxLength", "length <="))


def _bounds(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return "; ".join(b for p in prop["anyOf"] if (b := _bounds(_resolve(p, defs), defs)))
    shown = [f"{sign} {prop[key]}" for key, sign in _BOUNDS if key in prop]
    if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
        inner = _bounds(_resolve(prop["items"], defs), defs)
        shown += [f"each {inner}"] if inner else []
    return ", ".join(shown)


def _project(client: Client, args: argparse.Namespace) -> None:
    me = client.project()
    _output(me.raw, args.json, lambda p: _table(
        f"project {p['project']}", ["quota", "limit", "used", "source", "what it counts"],
        [[name, q["limit"], q["used"], q["source"], q["description"]]
         for name, q in p["quotas"].items()]))


def read_instances(files: list[str]) -> Any:
    """Instances from the command line's files: images, CSV, .npy, .json, .jsonl or '-'."""
    if all(f.lower().endswith(IMAGE_SUFFIXES) for f in files):
        return [Path(f) for f in files]
    if len(files) != 1:
        raise ValueError("give one data file, or any number of image files")
    name = files[0]
    if name == "-":
        return _json_instances(json.load(sys.stdin))
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".json":
        return _json_instances(json.loads(path.read_text()))
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as f:  # CSV with a header: rows keyed by column name
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _json_instances(data: Any) -> Any:
    return data["instances"] if isinstance(data, dict) and "instances" in data else data


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _predict(client: Client, args: argparse.Namespace) -> None:
    out = client.predict(args.model, read_instances(args.file))
    data = {"predictions": out.predictions, **out.extras}
    if out.probabilities is not None:
        data["probabilities"] = out.probabilities
    _output(data, args.json, lambda d: _table(
        f"predictions ({len(d['predictions'])})", ["row", *d],
        [[i, *(_jsonable(v[i]) if isinstance(v[i], np.ndarray) else v[i] for v in d.values())]
         for i in range(len(d["predictions"]))]))


def _embed(client: Client, args: argparse.Namespace) -> None:
    emb = client.embed(args.model, read_instances(args.file))
    _output({"embeddings": emb}, args.json, lambda d: _table(
        f"embeddings {emb.shape[0]} x {emb.shape[1]}", ["row", "embedding"],
        [[i, row.tolist()] for i, row in enumerate(emb)]))


def _generate(client: Client, args: argparse.Namespace) -> None:
    samples = client.generate(args.model, args.n, seed=args.seed)
    if args.output is not None:
        paths = _write_samples(client, args, samples)
        _output({"saved": [str(p) for p in paths]}, args.json,
                lambda d: print(f"wrote {len(d['saved'])} file(s) to {args.output}: "
                                + " ".join(Path(p).name for p in d["saved"][:5])
                                + (" …" if len(d["saved"]) > 5 else "")))
        return
    if isinstance(samples, list):  # images: PNG bytes, written beside each other
        paths = [Path(f"sample_{i}.png") for i in range(len(samples))]
        for path, png in zip(paths, samples, strict=True):
            path.write_bytes(png)
        _output({"saved": [str(p) for p in paths]}, args.json, lambda d: print(*d["saved"]))
        return
    _output({"samples": samples}, args.json, lambda d: _table(
        f"samples ({len(samples)})", ["row", "sample"],
        [[i, row.tolist()] for i, row in enumerate(samples)]))


def _write_samples(client: Client, args: argparse.Namespace, samples: Any) -> list[Path]:
    """Samples into args.output: one PNG per image, else one CSV (header: the model's
    features) or NPY; an existing file is never overwritten."""
    out: Path = args.output
    if isinstance(samples, list):
        files = {out / f"sample_{i:04d}.png": png for i, png in enumerate(samples)}
    else:
        arr = np.asarray(samples)
        path = out / f"samples.{args.format}"
        files = {path: _npy_bytes(arr) if args.format == "npy"
                 else _csv_bytes(arr, _feature_names(client, args.model, arr))}
    taken = [p for p in files if p.exists()]
    if taken:
        raise ValueError(f"{taken[0]} already exists; give -o a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        path.write_bytes(data)
    return list(files)


def _feature_names(client: Client, model: str, arr: np.ndarray) -> list[str]:
    width = arr.shape[1] if arr.ndim == 2 else 1
    features = client.model(model).input_schema.get("features") or []
    names = [f["name"] if isinstance(f, dict) else str(f) for f in features]
    return names if len(names) == width else [f"x{i}" for i in range(width)]


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _csv_bytes(arr: np.ndarray, names: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(arr.reshape(len(arr), -1).tolist())
    return buf.getvalue().encode()


# ------------------------------------------------------------------------------------ sweeps


def _register_sweeps(sub: Any, common: argparse.ArgumentParser) -> None:
    sweeps = sub.add_parser("sweeps", help="start, list, show, follow, cancel hyperparameter "
                            "sweeps").add_subparsers(dest="action", required=True)
    start = _leaf(sweeps, "start", "start a sweep: trials sampled from --space run as jobs",
                  _sweep_start, common)
    start.add_argument("algorithm")
    start.add_argument("--dataset", required=True, help="dataset id")
    start.add_argument("--space", required=True, help='a JSON file, or inline JSON: '
                       '{"n_clusters": {"choices": [2, 3, 4]}, "lr": {"low": 1e-4, "high": 0.1, '
                       '"log": true}}')
    start.add_argument("--metric", required=True, help="e.g. silhouette, val_loss")
    start.add_argument("--direction", required=True, choices=["maximize", "minimize"])
    start.add_argument("--trials", type=int, required=True, help="the trial budget")
    start.add_argument("--parallelism", type=int, default=1, help="trials at once")
    start.add_argument("--param", action="append", default=[], metavar="K=V",
                       help="a fixed param of every trial; V read as JSON when it parses")
    start.add_argument("--sampler", choices=["auto", "tpe", "random", "grid"], default=None)
    start.add_argument("--seed", type=int, default=None)
    start.add_argument("--no-pruner", action="store_true", help="never prune a trial")
    start.add_argument("--name", default=None)
    start.add_argument("--follow", action="store_true", help="follow it to its end")
    _leaf(sweeps, "list", "list sweeps", _sweeps_list, common).add_argument("--status",
                                                                            default=None)
    _leaf(sweeps, "show", "a sweep and its leaderboard", _sweep_show, common).add_argument("id")
    _leaf(sweeps, "follow", "follow a sweep to its end", _sweep_follow, common).add_argument("id")
    _leaf(sweeps, "cancel", "cancel a sweep and its active trials", _sweep_cancel,
          common).add_argument("id")


def read_space(text: str) -> dict[str, Any]:
    """--space: the JSON of a file when text names one, else text itself as JSON."""
    path = Path(text)
    raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
    try:
        space = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--space is neither a JSON file nor JSON: {exc}") from exc
    if isinstance(space, dict):
        return space
    raise ValueError("--space must be a JSON object of param: range or choices")


def _sweep_view(sweep: dict[str, Any]) -> None:
    _fields(f"sweep {sweep['id']}", {k: sweep.get(k) for k in (
        "status", "algorithm", "dataset_id", "metric", "direction", "budget", "parallelism",
        "progress", "best_job_id", "best_model_id", "best_value", "error")})
    _table("trials", ["#", "job", "params", "state", "value", "seconds"],
           [[t["number"], t["job_id"], json.dumps(t["params"]), t["state"], t["value"],
             t["seconds"]] for t in sweep["trials"]])


def _sweep_start(client: Client, args: argparse.Namespace) -> None:
    sweep = client.sweep(args.dataset, args.algorithm, read_space(args.space),
                         metric=args.metric, direction=args.direction, trials=args.trials,
                         parallelism=args.parallelism,
                         params=dict(parse_param(p) for p in args.param),
                         pruner=not args.no_pruner, sampler=args.sampler, seed=args.seed,
                         name=args.name)
    if args.follow:
        sweep = client.follow_sweep(sweep)
    _output(sweep.raw, args.json, _sweep_view)


def _sweeps_list(client: Client, args: argparse.Namespace) -> None:
    page = client.sweeps(status=args.status, limit=500)
    _output([s.raw for s in page.items], args.json, lambda items: _table(
        f"sweeps ({page.total})", ["id", "algorithm", "metric", "status", "trials", "best",
                                   "created"],
        [[s["id"], s["algorithm"], s["metric"], s["status"],
          f"{len(s['trials'])}/{s['budget']}", s["best_value"], s["created_at"]]
         for s in items]))


def _sweep_show(client: Client, args: argparse.Namespace) -> None:
    _output(client.sweep_status(args.id).raw, args.json, _sweep_view)


def _sweep_follow(client: Client, args: argparse.Namespace) -> None:
    _output(client.follow_sweep(args.id).raw, args.json, _sweep_view)


def _sweep_cancel(client: Client, args: argparse.Namespace) -> None:
    _output(client.cancel_sweep(args.id).raw, args.json, _sweep_view)


# ---------------------------------------------------------------------------------- registry


def _registry_register(client: Client, args: argparse.Namespace) -> None:
    v = client.register(args.name, args.model)
    _output(v.raw, args.json, lambda d: print(
        f"registered {d['model_id']} as {d['name']} version {d['version']} "
        f"({d['name']}@{d['version']})"))


def _registry_alias(client: Client, args: argparse.Namespace) -> None:
    a = client.set_alias(args.name, args.alias, args.version)
    _output(a.raw, args.json, lambda d: print(
        f"{d['name']}@{d['alias']} -> version {d['version']}"))


def _registry_unalias(client: Client, args: argparse.Namespace) -> None:
    client.delete_alias(args.name, args.alias)
    _output({"deleted": f"{args.name}@{args.alias}"}, args.json,
            lambda d: print(f"removed {d['deleted']}"))


def _registry_list(client: Client, args: argparse.Namespace) -> None:
    page = client.registry_names(limit=500)
    _output([r.raw for r in page.items], args.json, lambda items: _table(
        f"registered names ({page.total})", ["name", "latest", "aliases", "created"],
        [[r["name"], r["latest_version"], r["aliases"], r["created_at"]] for r in items]))


def _registry_show(client: Client, args: argparse.Namespace) -> None:
    def view(d: dict[str, Any]) -> None:
        _table(f"{d['name']}: versions", ["version", "model", "aliases", "registered", "by"],
               [[v["version"], v["model_id"] + (" (deleted)" if v["model_deleted_at"] else ""),
                 ", ".join(v["aliases"]), v["created_at"], v["created_by"]]
                for v in d["versions"]])
        _table(f"{d['name']}: alias moves", ["alias", "from", "to", "by", "at"],
               [[m["alias"], m["from_version"], m["to_version"], m["by"], m["at"]]
                for m in d["history"]])
    _output(client.registry(args.name).raw, args.json, view)


def _export(client: Client, args: argparse.Namespace) -> None:
    path = client.export(args.model, args.format, args.output)
    _output({"saved": str(path), "bytes": path.stat().st_size}, args.json,
            lambda d: print(f"wrote {d['saved']} ({d['bytes']} bytes)"))


# ------------------------------------------------------------------------- batch prediction


def _batch(client: Client, args: argparse.Namespace) -> None:
    fmt = args.format or (format_of(args.out) if args.out else "parquet")
    job = client.batch(args.model, args.dataset, args.output, fmt, name=args.name)
    if not args.follow:
        _output(job.raw, args.json, _job_view)
        return
    job = client.follow(job, progress=not args.json, raise_on_failure=True)
    out = args.out or Path(f"{job.id}.{fmt}")
    client.download_result(job, out)
    _output({**job.raw, "saved": str(out)}, args.json, _saved_job_view)


def _saved_job_view(job: dict[str, Any]) -> None:
    _job_view(job)
    print(f"saved {job['saved']} ({Path(job['saved']).stat().st_size} bytes)")


def _jobs_result(client: Client, args: argparse.Namespace) -> None:
    client.download_result(args.id, args.out)
    _output({"saved": str(args.out), "bytes": args.out.stat().st_size}, args.json,
            lambda d: print(f"saved {d['saved']} ({d['bytes']} bytes)"))


# ------------------------------------------------------------ comparisons and webhooks


def register_compare(sub: Any, common: argparse.ArgumentParser) -> None:
    """`compare`, `comparisons …` and `webhooks …`."""
    cmp = _leaf(sub, "compare", "does pretraining pay? train transfer from each backbone, "
                "pretrained and from scratch, over several seeds (and --follow it)",
                _compare, common)
    cmp.add_argument("dataset", help="id of a labelled dataset")
    cmp.add_argument("--backbone", action="append", required=True, dest="backbones",
                     help="model:<id>, a torchvision architecture or minilm; repeat to compare "
                          "several")
    cmp.add_argument("--seeds", type=seeds_arg, default=3,
                     help="a count n (seeds 0..n-1, default 3) or a comma-separated list")
    cmp.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="a transfer param every job shares (read as JSON when it parses)")
    cmp.add_argument("--features", default=None, help="comma-separated column names")
    cmp.add_argument("--target", default=None)
    cmp.add_argument("--metric", default=None, help="held-out metric (default accuracy)")
    cmp.add_argument("--name", default=None)
    cmp.add_argument("--follow", action="store_true", help="wait for every job, then show "
                     "the results")
    comparisons = sub.add_parser("comparisons", help="list, show, cancel comparisons"
                                 ).add_subparsers(dest="action", required=True)
    _leaf(comparisons, "list", "list comparisons", _comparisons_list, common)
    _leaf(comparisons, "show", "a comparison's rows and deltas", _comparisons_show,
          common).add_argument("id")
    _leaf(comparisons, "cancel", "cancel a comparison's jobs", _comparisons_cancel,
          common).add_argument("id")
    hooks = sub.add_parser("webhooks", help="register URLs for job, batch, sweep and "
                           "comparison events").add_subparsers(dest="action", required=True)
    add = _leaf(hooks, "add", "register URL for events (the secret is shown once)",
                _webhooks_add, common)
    add.add_argument("url")
    add.add_argument("--event", action="append", required=True, dest="events",
                     help="job.succeeded, job.*, batch.failed, comparison.*, *; repeat")
    add.add_argument("--secret", default=None, help="signing secret (default: one is made)")
    _leaf(hooks, "list", "list webhooks", _webhooks_list, common)
    _leaf(hooks, "show", "show one webhook", _webhooks_show, common).add_argument("id")
    _leaf(hooks, "delete", "delete a webhook", _webhooks_delete, common).add_argument("id")
    _leaf(hooks, "deliveries", "a webhook's deliveries: status, attempts, last response",
          _webhooks_deliveries, common).add_argument("id")
    _leaf(hooks, "test", "send a webhook.test delivery", _webhooks_test,
          common).add_argument("id")


def seeds_arg(text: str) -> int | list[int]:
    """--seeds: a count ("3") or a list ("0,1,7")."""
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a count or comma-separated seeds") from exc
    return numbers[0] if len(numbers) == 1 and "," not in text else numbers


def _compare(client: Client, args: argparse.Namespace) -> None:
    params = dict(parse_param(p) for p in args.param)
    features = args.features.split(",") if args.features else None
    found = client.compare(args.dataset, args.backbones, seeds=args.seeds, params=params,
                           features=features, target=args.target, metric=args.metric,
                           name=args.name)
    if args.follow:
        def progress(c: Any) -> None:
            if not args.json:
                done = sum(v for k, v in c.counts.items() if k not in ("queued", "running"))
                print(f"{c.id}: {c.status}, {done}/{len(c.job_ids)} jobs ended", file=sys.stderr)
        found = client.wait_comparison(found, on_update=progress)
    _output(found.raw, args.json, _comparison_view)


def _comparison_view(c: dict[str, Any]) -> None:
    _fields(f"comparison {c['id']}", {k: c.get(k) for k in (
        "status", "dataset_id", "metric", "seeds", "counts", "created_at")})
    _table(f"{c['metric']} per seed", ["backbone", "pretrained", "values", "mean", "std"],
           [[r["backbone"], r["pretrained"], r["values"], r["mean"], r["std"]]
            for r in c["rows"]])
    _table("pretrained - scratch (paired by seed, 95% CI)",
           ["backbone", "delta", "ci_low", "ci_high", "pairs", "note"],
           [[d["backbone"], d["delta"], d["ci_low"], d["ci_high"], d["n_pairs"], d["note"]]
            for d in c["deltas"]])


def _comparisons_list(client: Client, args: argparse.Namespace) -> None:
    page = client.comparisons(limit=500)
    _output([c.raw for c in page.items], args.json, lambda items: _table(
        f"comparisons ({page.total})", ["id", "name", "status", "backbones", "seeds", "created"],
        [[c["id"], c["name"], c["status"], c["backbones"], c["seeds"], c["created_at"]]
         for c in items]))


def _comparisons_show(client: Client, args: argparse.Namespace) -> None:
    _output(client.comparison(args.id).raw, args.json, _comparison_view)


def _comparisons_cancel(client: Client, args: argparse.Namespace) -> None:
    _output(client.cancel_comparison(args.id).raw, args.json, _comparison_view)


def _webhook_view(w: dict[str, Any]) -> None:
    _fields(f"webhook {w['id']}", {k: v for k, v in w.items() if v is not None})
    if w.get("secret"):
        print("keep the secret: it is not shown again", file=sys.stderr)


def _webhooks_add(client: Client, args: argparse.Namespace) -> None:
    _output(client.add_webhook(args.url, args.events, secret=args.secret).raw, args.json,
            _webhook_view)


def _webhooks_list(client: Client, args: argparse.Namespace) -> None:
    page = client.webhooks(limit=500)
    _output([w.raw for w in page.items], args.json, lambda items: _table(
        f"webhooks ({page.total})", ["id", "url", "events", "active", "created"],
        [[w["id"], w["url"], w["events"], w["active"], w["created_at"]] for w in items]))


def _webhooks_show(client: Client, args: argparse.Namespace) -> None:
    _output(client.webhook(args.id).raw, args.json, _webhook_view)


def _webhooks_delete(client: Client, args: argparse.Namespace) -> None:
    client.delete_webhook(args.id)
    _output({"deleted": args.id}, args.json, lambda d: print(f"deleted {args.id}"))


def _webhooks_deliveries(client: Client, args: argparse.Namespace) -> None:
    page = client.deliveries(args.id, limit=500)
    _output([d.raw for d in page.items], args.json, lambda items: _table(
        f"deliveries ({page.total})", ["id", "event", "status", "attempts", "last code",
                                       "last error", "created"],
        [[d["id"], d["event"], d["status"], d["attempts"], d["last_status_code"],
          d["last_error"], d["created_at"]] for d in items]))


def _webhooks_test(client: Client, args: argparse.Namespace) -> None:
    delivery = client.test_webhook(args.id)
    _output(delivery.raw, args.json, lambda d: print(f"queued {d['event']} delivery {d['id']}"))


# ---------------------------------------------------------------- nearest-neighbour indexes


def _register_neighbors(sub: Any, models: Any, common: argparse.ArgumentParser) -> None:
    """`models index`, `models indexes` and `neighbors`."""
    index = _leaf(models, "index", "build a nearest-neighbour index of a dataset's embeddings "
                  "under the model (and --follow it)", _models_index, common)
    index.add_argument("model")
    index.add_argument("dataset", help="dataset id of the rows to index")
    index.add_argument("--metric", choices=["cosine", "l2"], default=None,
                       help="default: l2 for scikit-learn models, cosine for the others")
    index.add_argument("--param", action="append", default=[], metavar="K=V",
                       help="an HNSW param: m, ef_construction, ef_search")
    index.add_argument("--label-column", default=None,
                       help="the column answered as each neighbour's label")
    index.add_argument("--follow", action="store_true", help="follow its job to the end")
    _leaf(models, "indexes", "list a model's indexes", _models_indexes, common).add_argument(
        "model")
    near = _leaf(sub, "neighbors", "the nearest indexed rows of each instance of FILE (CSV with "
                 "a header, .npy, .json, .jsonl) or of image files", _neighbors, common)
    near.add_argument("model")
    near.add_argument("--instances", nargs="+", required=True, metavar="FILE",
                      help="a data file, '-' for JSON on stdin, or images")
    near.add_argument("-k", type=int, default=10, help="neighbours per instance (default 10)")
    near.add_argument("--index", default=None, help="index id (default: the model's newest "
                      "ready index)")


def _index_view(ix: dict[str, Any]) -> None:
    _fields(f"index {ix['id']}", ix)


def _models_index(client: Client, args: argparse.Namespace) -> None:
    params = dict(parse_param(p) for p in args.param) or None
    index = client.build_index(args.model, args.dataset, metric=args.metric, params=params,
                               label_column=args.label_column, wait=args.follow,
                               progress=args.follow and not args.json)
    _output(index.raw, args.json, _index_view)


def _models_indexes(client: Client, args: argparse.Namespace) -> None:
    page = client.indexes(args.model, limit=500)
    _output([i.raw for i in page.items], args.json, lambda items: _table(
        f"indexes of {args.model} ({page.total})", ["id", "status", "metric", "rows", "dim",
                                                    "dataset", "created"],
        [[i["id"], i["status"], i["metric"], i["n_rows"], i["dim"], i["dataset_id"],
          i["created_at"]] for i in items]))


def _neighbors(client: Client, args: argparse.Namespace) -> None:
    found = client.neighbors(args.model, read_instances(args.instances), args.k,
                             index_id=args.index)
    data = {"neighbors": [[{k: v for k, v in vars(n).items() if v is not None} for n in hits]
                          for hits in found]}
    _output(data, args.json, lambda d: _table(
        f"neighbours ({len(found)} instances, k={args.k})",
        ["instance", "rank", "row", "distance", "id", "label"],
        [[i, rank, n["row"], round(n["distance"], 6), n.get("id", ""), n.get("label", "")]
         for i, hits in enumerate(d["neighbors"]) for rank, n in enumerate(hits, 1)]))
