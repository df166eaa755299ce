"""Start a local Triton Inference Server (PyTriton's ``tritonserver`` binary) on a model repository.

The ``nvidia-pytriton`` wheel ships a CPU-capable ``tritonserver`` with one backend, ``python``, and a
Python-backend stub per Python minor version. This module runs that binary directly (no PyTriton API) on a
repository written by ``protoinspect export-triton``, so the tests and the load benchmark talk to a real
server over gRPC and HTTP. Only the Python-backend models can be served this way (the ``inspector``); the
``onnxruntime_onnx`` / ``tensorrt_plan`` models need NVIDIA's NGC container, so the server is started with
``--model-control-mode=explicit --load-model=inspector`` and never tries to load them.

The server environment (``python_env``) is a virtual environment that holds ``nvidia-pytriton`` and
``protoinspect[onnx]``; the Python-backend stub embeds ``libpython3.X.so`` from the system library path
and finds its standard library and site-packages through ``python3`` on ``PATH``. So the venv must be made
from the Python whose ``libpython`` the stub loads, i.e. the distribution's (``/usr/bin/python3``); a venv
of another build of the same minor version (pyenv's 3.11.7) starts a stub whose libpython and stdlib
disagree (``'_thread.RLock' object has no attribute '_recursion_count'``). Set it up once with::

    /usr/bin/python3 -m venv .cache/triton-venv
    .cache/triton-venv/bin/pip install nvidia-pytriton==0.7.0 -e ".[onnx]"

Then::

    with start_server("models/", python_env=".cache/triton-venv") as server:
        server.grpc_url, server.http_url        # "127.0.0.1:PORT"

Every address is loopback (127.0.0.1): HTTP, gRPC and metrics. The server runs in its own process group,
which is terminated (then killed) on exit; its log is kept in :attr:`ServerHandle.log_text`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protoinspect.sdk.errors import BackendError, MissingDependencyError, ProtoInspectError, report_error

LOOPBACK = "127.0.0.1"
#: environment variable naming the server venv (``start_server(python_env=None)`` and ``serve-triton``)
ENV_VAR = "PROTOINSPECT_TRITON_ENV"
PYTRITON_VERSION = "0.7.0"
#: where the system Python lives (pyvenv.cfg ``home``): the interpreter whose libpython the stub embeds
SYSTEM_PYTHON_HOMES = ("/usr/bin", "/bin", "/usr/local/bin")
SETUP_HINT = ('/usr/bin/python3 -m venv .cache/triton-venv && .cache/triton-venv/bin/pip install '
              f'nvidia-pytriton=={PYTRITON_VERSION} -e ".[onnx]"')


class ServerStartError(BackendError):
    """The server did not become ready (its log tail is in the message)."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of a PyTriton installation lie, and the venv whose Python the stub embeds."""

    python_env: Path      # the venv: bin/python3 runs model.py's imports
    python_version: str   # "3.11"
    package_dir: Path     # site-packages/pytriton
    server_bin: Path      # pytriton/tritonserver/bin/tritonserver
    backends_dir: Path    # pytriton/tritonserver/backends (python/libtriton_python.so, no stub)
    stub: Path            # pytriton/tritonserver/python_backend_stubs/<version>/triton_python_backend_stub
    libs_dir: Path        # nvidia_pytriton.libs (the binaries' bundled shared libraries)


def _venv_cfg(python_env: Path) -> dict[str, str]:
    cfg = python_env / "pyvenv.cfg"
    if not cfg.is_file():
        return {}
    pairs = (line.partition("=") for line in cfg.read_text(encoding="utf-8").splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep}


def _env_python_version(python_env: Path) -> str:
    cfg = _venv_cfg(python_env)
    version = cfg.get("version") or cfg.get("version_info")
    if version:
        return ".".join(version.split(".")[:2])
    libs = sorted((python_env / "lib").glob("python3.*"))
    if not libs:
        raise MissingDependencyError(f"{python_env} is not a Python environment (no pyvenv.cfg, no lib/python3.*): "
                                     f"set one up with `{SETUP_HINT}`")
    return libs[-1].name.removeprefix("python")


def find_tritonserver(python_env: str | os.PathLike[str] | None = None) -> TritonInstall:
    """The PyTriton ``tritonserver`` of ``python_env`` (default: ``$PROTOINSPECT_TRITON_ENV``).

    Raises:
        MissingDependencyError: no environment given, or it lacks ``nvidia-pytriton`` or the stub of its
            Python version (the message says how to set it up).
    """
    raw = python_env if python_env is not None else os.environ.get(ENV_VAR)
    if not raw:
        raise MissingDependencyError(f"no Triton server environment: pass python_env= or set {ENV_VAR}; set one up "
                                     f"with `{SETUP_HINT}`")
    env = Path(raw).absolute()
    if not (env / "bin" / "python3").exists():
        raise MissingDependencyError(f"Triton server environment {env} does not exist (no bin/python3): set it up "
                                     f"with `{SETUP_HINT}`")
    version = _env_python_version(env)
    home = _venv_cfg(env).get("home", "")
    if home and not home.startswith(SYSTEM_PYTHON_HOMES):
        raise MissingDependencyError(
            f"Triton server environment {env} was made from {home}, not from the system Python: the Python-backend "
            f"stub embeds the system libpython{version}, and another build's standard library and packages fail in it "
            "(pyenv 3.11.7: '_thread.RLock' object has no attribute '_recursion_count', or empty outputs); make the "
            f"venv with /usr/bin/python3: `{SETUP_HINT}`")
    package = env / "lib" / f"python{version}" / "site-packages" / "pytriton"
    server = package / "tritonserver" / "bin" / "tritonserver"
    if not server.is_file():
        raise MissingDependencyError(f"{env} has no nvidia-pytriton ({server} missing): run `{env}/bin/pip install "
                                     f"nvidia-pytriton=={PYTRITON_VERSION}`")
    stub = package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError(f"nvidia-pytriton in {env} has no Python-backend stub for Python {version} "
                                     f"({stub}): make the venv from a Python the wheel supports")
    return TritonInstall(python_env=env, python_version=version, package_dir=package, server_bin=server,
                         backends_dir=package / "tritonserver" / "backends", stub=stub,
                         libs_dir=package.parent / "nvidia_pytriton.libs")


def free_port() -> int:
    """A TCP port free on the loopback address now (the server may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerHandle:
    """A running ``tritonserver``: its URLs, process and log; a context manager that stops it."""

    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int | None
    workdir: Path
    log_path: Path
    models: tuple[str, ...]
    log_text: str = field(default="", repr=False)

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def log(self) -> str:
        """The server's log so far (stdout and stderr, stubs included)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return self.log_text

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM to the process group (server and stubs), SIGKILL after ``timeout``; keeps the log."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # stubs left behind in the group after the server exited
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.workdir.exists():
            self.log_text = self.log()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the starting thread's process dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed test run or benchmark leaves no server behind. Start servers from a long-lived thread."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # loopback http only
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def server_command(install: TritonInstall, repo: Path, backends: Path, *, http_port: int, grpc_port: int,
                   metrics_port: int | None, models: Sequence[str], shm_prefix: str) -> list[str]:
    """The ``tritonserver`` command line: loopback only, explicit model control, the given models loaded."""
    cmd = [str(install.server_bin), f"--model-repository={repo}", f"--backend-directory={backends}",
           f"--cache-directory={install.package_dir / 'tritonserver' / 'caches'}",
           f"--http-address={LOOPBACK}", f"--http-port={http_port}",
           f"--grpc-address={LOOPBACK}", f"--grpc-port={grpc_port}",
           "--model-control-mode=explicit", *[f"--load-model={m}" for m in models],
           "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=5",
           "--pinned-memory-pool-byte-size=0",  # no CUDA here; the pool only adds a warning
           f"--backend-config=python,shm-region-prefix-name={shm_prefix}", "--log-verbose=0"]
    if metrics_port is None:
        cmd.append("--allow-metrics=false")
    else:
        cmd += ["--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={LOOPBACK}",
                f"--metrics-port={metrics_port}"]
    return cmd


def server_env(install: TritonInstall) -> dict[str, str]:
    """The environment the server runs in: PyTriton's (venv ``bin`` first on PATH, bundled libs on
    LD_LIBRARY_PATH), without variables that would point the stub's Python elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{install.python_env / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    libs = str(install.libs_dir)
    env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}{os.pathsep}{libs}" if env.get("LD_LIBRARY_PATH") else libs
    env["VIRTUAL_ENV"] = str(install.python_env)
    return env


def start_server(repo_dir: str | os.PathLike[str], *, python_env: str | os.PathLike[str] | None = None,
                 models: Sequence[str] = ("inspector",), http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, timeout_s: float = 60.0) -> ServerHandle:
    """Start PyTriton's ``tritonserver`` on ``repo_dir`` and wait until ``models`` are ready.

    Args:
        repo_dir: a model repository (``protoinspect export-triton``).
        python_env: the server venv (see the module docstring); default ``$PROTOINSPECT_TRITON_ENV``.
        models: the models to load (explicit model control: the others are never loaded).
        http_port, grpc_port: loopback ports; None: a free one each.
        metrics_port: serve Prometheus metrics on this loopback port; None: metrics off.
        timeout_s: how long to wait for readiness.

    Returns:
        A :class:`ServerHandle` (use it as a context manager; it stops the server).

    Raises:
        MissingDependencyError: no usable server environment (:func:`find_tritonserver`).
        ServerStartError: the server exited or was not ready within ``timeout_s`` (with its log tail).
    """
    install = find_tritonserver(python_env)
    repo = Path(repo_dir).resolve()
    if not repo.is_dir():
        raise ServerStartError(f"model repository {repo} does not exist: write it with `protoinspect export-triton "
                               "BUNDLE --repo DIR`")
    missing = [m for m in models if not (repo / m / "config.pbtxt").is_file()]
    if missing:
        raise ServerStartError(f"model repository {repo} has no {missing} (no config.pbtxt)")
    workdir = Path(tempfile.mkdtemp(prefix="protoinspect-triton-"))
    try:  # PyTriton's layout: the stub of the venv's Python next to libtriton_python.so
        shutil.copytree(install.backends_dir, workdir / "backends")
        shutil.copy2(install.stub, workdir / "backends" / "python" / "triton_python_backend_stub")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    http_port = http_port or free_port()
    grpc_port = grpc_port or free_port()
    cmd = server_command(install, repo, workdir / "backends", http_port=http_port, grpc_port=grpc_port,
                         metrics_port=metrics_port, models=models, shm_prefix=f"protoinspect_{workdir.name}_")
    log_path = workdir / "tritonserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=server_env(install), cwd=workdir, start_new_session=True,
                                   preexec_fn=_die_with_parent)
    handle = ServerHandle(process, http_port, grpc_port, metrics_port, workdir, log_path, tuple(models))
    try:
        _wait_ready(handle, timeout_s)
    except BaseException:
        handle.stop()
        raise
    return handle


def _wait_ready(handle: ServerHandle, timeout_s: float) -> None:
    base = f"http://{handle.http_url}/v2"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            break
        if _get(f"{base}/health/ready") == 200 and all(_get(f"{base}/models/{m}/ready") == 200 for m in handle.models):
            return
        time.sleep(0.25)
    state = (f"exited with code {handle.process.returncode}" if handle.process.poll() is not None
             else f"not ready after {timeout_s:.0f} s")
    tail = "\n".join(handle.log().splitlines()[-40:])
    raise ServerStartError(f"tritonserver {state} (models {list(handle.models)}); log tail:\n{tail}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect serve-triton --repo DIR [--env VENV] [--http-port N] [--grpc-port N] [--metrics-port N]``."""
    p = argparse.ArgumentParser(prog="protoinspect serve-triton",
                                description="Serve a repository's Python-backend models with PyTriton's tritonserver "
                                            "on 127.0.0.1 until interrupted.")
    p.add_argument("--repo", required=True, help="model repository (protoinspect export-triton)")
    p.add_argument("--env", default=None, help=f"server venv with nvidia-pytriton and protoinspect[onnx] (default ${ENV_VAR})")
    p.add_argument("--model", action="append", default=None, help="model to load (repeatable; default: inspector)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=None, help="serve metrics on this loopback port")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        server = start_server(args.repo, python_env=args.env, models=tuple(args.model or ("inspector",)),
                              http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                              timeout_s=args.timeout)
    except ProtoInspectError as exc:
        return report_error(exc)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops the server too
    with server:
        print(f"serving {list(server.models)} from {Path(args.repo).resolve()}: grpc {server.grpc_url}, "
              f"http {server.http_url} (Ctrl-C stops)", flush=True)
        try:
            while server.running():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        code = server.process.poll()
    if code not in (None, 0, -signal.SIGTERM):
        print(server.log_text[-4000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
