"""The Docker image without a container runtime: what the Dockerfile copies installs and starts.

The wheel is built from exactly the paths the Dockerfile's COPY lines name, installed into a fresh
venv that borrows only third-party packages from this one (a .pth line adds its site-packages as a
plain path, so the repo's editable install is never processed), and run with no PYTHONPATH and
outside the repo. The compose files are checked as data, and by docker compose when installed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import ROOT, free_port, reap, terminate, wait_ready

pytestmark = pytest.mark.integration


def dockerfile_copies(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of each COPY from the build context, in order."""
    text = dockerfile.read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0].upper() != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        args = [p for p in parts[1:] if not p.startswith("--")]
        pairs += [(src, args[-1]) for src in args[:-1]]
    return pairs


def _ignored(patterns: list[str]) -> object:
    # .dockerignore: `**/x` matches at any depth, a plain pattern from the context's root only.
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(ROOT)
        return {n for n in names for p in patterns
                if (p.startswith("**/") and fnmatch.fnmatch(n, p[3:]))
                or fnmatch.fnmatch(str(rel / n), p)}
    return ignore


def build_context(dest: Path) -> list[str]:
    """Copy what the Dockerfile copies (less .dockerignore) into dest; the sources, in order."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = dockerfile_copies(ROOT / "Dockerfile")
    for src, target in copies:
        out = dest / target if not target.endswith("/") else dest / target / Path(src).name
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, out, ignore=_ignored(patterns))  # type: ignore[arg-type]
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, out)
    return [src for src, _ in copies]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRETRAINER_", "PYTHON", "MAKE", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel built from the Dockerfile's COPY paths."""
    tmp = tmp_path_factory.mktemp("image")
    sources = build_context(tmp / "context")
    assert "pretrainer_client" in sources, "the console script imports pretrainer_client"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(tmp / "context")],
                   check=True, cwd=tmp, env=_clean_env())
    venv = tmp / "venv"
    base_python = sys._base_executable  # type: ignore[attr-defined]
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True,
                   env=_clean_env())
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, env=_clean_env()).stdout.strip())
    # Third-party packages borrowed as a plain path: its .pth files (the editable finder of the
    # repo among them) are not processed, so only the wheel can provide app and its siblings.
    (purelib / "zz_borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next((tmp / "dist").glob("pretrainer-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, cwd=tmp, env=_clean_env())
    return venv


def test_the_image_installs_torch_once_from_the_pin() -> None:
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert base.startswith("python:") and "slim" in base, f"{base} may carry a torch of its own"
    assert not re.search(r"pip install[^\n]*\btorch", text), "torch comes from pyproject.toml"
    pins = re.findall(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins == ["2.14.1"]


def test_the_installed_image_imports_from_its_own_copy(image_venv: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c",
         "import app.cli, worker.celery_app, pretrainer_client; import app; print(app.__file__)"],
        capture_output=True, text=True, cwd=tmp_path,
        env=_clean_env(PRETRAINER_DATA_DIR=str(tmp_path)), check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert Path(out.stdout.strip()).is_relative_to(image_venv), out.stdout
    assert not Path(out.stdout.strip()).is_relative_to(ROOT)


def test_a_context_without_the_client_fails_as_the_old_image_did(tmp_path: Path) -> None:
    # The check above can fail: the same install, less pretrainer_client, cannot import app.cli.
    build_context(tmp_path / "context")
    shutil.rmtree(tmp_path / "context" / "pretrainer_client")
    out = subprocess.run(
        [sys._base_executable, "-c", "import app.cli"],  # type: ignore[attr-defined]
        capture_output=True, text=True, cwd=tmp_path / "context",
        env=_clean_env(PYTHONPATH=f"{tmp_path / 'context'}:{sysconfig.get_path('purelib')}"),
        check=False)
    assert out.returncode != 0 and "No module named 'pretrainer_client'" in out.stderr


def test_the_image_migrates_starts_and_serves(image_venv: Path, tmp_path: Path) -> None:
    pretrainer = str(image_venv / "bin" / "pretrainer")
    env = _clean_env(PRETRAINER_DATA_DIR=str(tmp_path / "data"), PRETRAINER_PORT=str(free_port()))
    migrate = subprocess.run([pretrainer, "migrate"], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=300, check=False)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    assert (tmp_path / "data" / "pretrainer.db").exists()
    log = tmp_path / "up.log"
    proc = subprocess.Popen([pretrainer, "up"], cwd=tmp_path, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    http = httpx.Client(base_url=f"http://127.0.0.1:{env['PRETRAINER_PORT']}", timeout=30)
    try:
        wait_ready(http, proc, log, timeout=180)
        assert http.get("/readyz").json()["checks"] == {
            "database": "ok", "broker": "ok", "store": "ok"}
        assert http.get("/ui/").status_code == 200  # package data came along
        # The compose healthcheck: a worker of this host answers (it may still be starting).
        deadline, ping = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            ping = subprocess.run([pretrainer, "worker", "--ping"], capture_output=True,
                                  text=True, cwd=tmp_path, env=env, timeout=60, check=False)
            if ping.returncode == 0:
                break
            time.sleep(2)
        assert ping is not None and ping.returncode == 0, ping and ping.stderr[-2000:]
    finally:
        http.close()
        terminate(proc)  # `pretrainer up` stops the API and the worker
        reap(proc)


def test_worker_ping_fails_when_no_worker_answers(image_venv: Path, tmp_path: Path) -> None:
    ping = subprocess.run([str(image_venv / "bin" / "pretrainer"), "worker", "--ping"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=_clean_env(PRETRAINER_DATA_DIR=str(tmp_path / "data")), check=False)
    assert ping.returncode == 1, ping.stderr[-2000:]


# --- compose ---------------------------------------------------------------------------------

COMPOSE = ROOT / "docker-compose.yml"
ENV = {"POSTGRES_PASSWORD": "pg-pass-test", "MINIO_ROOT_PASSWORD": "minio-pass-test",
       "PRETRAINER_API_KEYS": "default:pt_test_key"}


def test_compose_file_keeps_its_promises() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name in ("api", "worker", "worker-cpu", "redis", "postgres", "minio", "flower"):
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("worker", "worker-cpu"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "pretrainer", "worker", "--ping"]
    assert "devices" in services["worker"]["deploy"]["resources"]["reservations"]
    assert "deploy" not in services["worker-cpu"], "the CPU worker must need no GPU"
    assert services["worker"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    # A fixed host port would stop `--scale api=N` at the second replica.
    (api_port,) = services["api"]["ports"]
    assert api_port.rsplit(":", 1)[0] == "${PRETRAINER_API_PORTS:-8000-8009}", api_port
    text = COMPOSE.read_text()
    for secret in ("pretrainer-secret", "POSTGRES_PASSWORD: pretrainer", ":pretrainer@"):
        assert secret not in text, f"a hard-coded secret: {secret}"
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    for var in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "PRETRAINER_API_KEYS"):
        assert f"${{{var}:?" in text and example[var] == "", var
    assert {"data", "weights"} <= set(compose["volumes"])


def _compose_tool() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither `docker compose` nor docker-compose is installed "
                "(.ci/run installs Debian's docker-compose when apt-get is there)")


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_docker_compose_validates_the_files(profile: str, tmp_path: Path) -> None:
    tool = _compose_tool()
    env = {**os.environ, **ENV, "COMPOSE_PROFILES": profile}
    env.pop("DOCKER_HOST", None)
    ok = subprocess.run([*tool, "-f", str(COMPOSE), "--project-directory", str(ROOT),
                         "--profile", profile, "config", "-q"],
                        capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run([*tool, "-f", str(COMPOSE), "--project-directory", str(tmp_path),
                              "config", "-q"], capture_output=True, text=True, cwd=tmp_path,
                             env=missing, check=False)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
