"""A real Triton Inference Server (PyTriton's ``tritonserver``, export/triton_server.py) serving the exported
repository's ``inspector`` model on 127.0.0.1, checked against in-process ONNX Runtime over gRPC and HTTP.

The server tests need the server venv (module docstring of :mod:`protoinspect.export.triton_server`):
``$PROTOINSPECT_TRITON_ENV`` or ``.cache/triton-venv`` at the repository root (``.ci/triton_env`` makes it);
without it they skip, naming the set-up command. The command-line and error checks below run everywhere.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

from protoinspect.export import triton_server
from protoinspect.export.triton_repository import export_triton_repository
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import MissingDependencyError
from protoinspect.sdk.inspector import Inspector
from protoinspect.sdk.triton_tensors import INPUT_FRAME, OUTPUTS, tensors_to_results

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV = ROOT / ".cache" / "triton-venv"
#: served vs in-process: the same onnxruntime version in both venvs, one server process; float32 sums may
#: still be ordered differently by another numpy (the server venv's is < 2: PyTriton pins it)
RTOL, ATOL = 1e-5, 1e-6
CFG = InspectorConfig(image_threshold=float("-inf"))  # every frame anomalous: regions and classes run


def server_env() -> Path:
    env = Path(os.environ.get(triton_server.ENV_VAR) or DEFAULT_ENV)
    try:
        triton_server.find_tritonserver(env)
    except MissingDependencyError as exc:
        pytest.skip(f"no PyTriton server environment: {exc} (CI: `bash .ci/triton_env`)")
    return env


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[triton_server.ServerHandle, Path, dict[str, Any]]]:
    """(running server, bundle, export record): the discovery bundle (detector + classifier) served."""
    env = server_env()  # skip before training the bundle
    _, disc = request.getfixturevalue("discovery_bundle")
    repo = tmp_path_factory.mktemp("triton-served") / "models"
    record = export_triton_repository(disc, repo, inspector_config=CFG, max_batch_size=4)
    server = triton_server.start_server(repo, python_env=env, timeout_s=90)
    pid = server.process.pid
    try:
        yield server, disc, record
    finally:
        server.stop()
    assert server.process.returncode is not None
    with pytest.raises(ProcessLookupError):  # the whole group (server and Python-backend stubs) is gone
        os.killpg(pid, 0)
    assert not server.workdir.exists()


def frames(n: int, h: int = 72, w: int = 96, seed: int = 5) -> np.ndarray:
    out = np.random.default_rng(seed).integers(90, 140, size=(n, h, w, 3), dtype=np.uint8)
    out[:, 20:40, 30:55] = 250  # a bright blob: a region to find
    return out


def infer(client_module: Any, url: str, batch: np.ndarray, dtype: str = "UINT8") -> dict[str, np.ndarray]:
    """Raw tritonclient call of the ``inspector`` model; every output as a numpy array."""
    client = client_module.InferenceServerClient(url=url)
    try:
        inp = client_module.InferInput(INPUT_FRAME, list(batch.shape), dtype)
        inp.set_data_from_numpy(batch)
        outputs = [client_module.InferRequestedOutput(name) for name in OUTPUTS]
        result = client.infer("inspector", [inp], outputs=outputs)
        return {name: result.as_numpy(name) for name in OUTPUTS}
    finally:
        client.close()


def assert_same(served: list[Any], local: list[Any]) -> None:
    assert len(served) == len(local)
    for s, r in zip(served, local):
        assert s.verdict == r.verdict
        assert s.anomaly_score == pytest.approx(r.anomaly_score, rel=RTOL, abs=ATOL)
        np.testing.assert_allclose(s.model_map, r.model_map, rtol=RTOL, atol=ATOL)
        assert s.frame_size == r.frame_size and s.bundle_id == r.bundle_id
        assert [d.to_dict() for d in s.defects] == [d.to_dict() for d in r.defects]
        assert (s.image_class_id, s.image_class_name) == (r.image_class_id, r.image_class_name)


# ------------------------------------------------------------------ a real server

@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_results_equal_in_process(served: tuple[Any, Path, dict[str, Any]], protocol: str) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server, bundle, _ = served
    module, url = (grpcclient, server.grpc_url) if protocol == "grpc" else (httpclient, server.http_url)
    color = frames(3)
    gray = np.full((1, 64, 64, 1), 128, np.uint8)
    got = [tensors_to_results(infer(module, url, color)), tensors_to_results(infer(module, url, gray))]
    with Inspector.from_bundle(bundle, backend="onnxruntime", config=CFG) as local:
        expected = [local.inspect_batch(list(color)), local.inspect_batch([gray[0]])]
    assert_same(got[0], expected[0])
    assert_same(got[1], expected[1])
    assert any(r.defects for r in expected[0])  # the comparison covered defects with classes
    assert all(d.class_id is not None for r in expected[0] for d in r.defects)


def test_wrong_frames_get_errors_and_the_server_keeps_serving(served: tuple[Any, Path, dict[str, Any]]) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    server, _, _ = served
    good = frames(1, 64, 64)
    with pytest.raises(InferenceServerException, match="(?i)FP32.*UINT8|UINT8.*FP32"):  # refused by Triton itself
        infer(grpcclient, server.grpc_url, good.astype(np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="(?i)FP32.*UINT8|UINT8.*FP32"):
        infer(httpclient, server.http_url, good.astype(np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="InputError.*C = 3"):  # refused by model.py (2 channels)
        infer(grpcclient, server.grpc_url, good[..., :2].copy())
    assert server.running()
    assert tensors_to_results(infer(grpcclient, server.grpc_url, good))[0].frame_size == (64, 64)


def test_only_the_python_backend_model_is_loaded(served: tuple[Any, Path, dict[str, Any]]) -> None:
    import tritonclient.http as httpclient

    server, _, record = served
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert set(index) == {"detector", "classifier", "inspector"}
        assert index["inspector"].get("state") == "READY" and index["inspector"]["version"] == str(record["version"])
        assert all(index[m].get("state") != "READY" for m in ("detector", "classifier"))  # no onnxruntime backend
        config = client.get_model_config("inspector")
        assert config["backend"] == "python"
        assert config["parameters"]["bundle_id"]["string_value"] == record["bundle_id"]
        assert not client.is_model_ready("detector")
    finally:
        client.close()
    assert all(not addr.startswith("0.0.0.0") for addr in (server.http_url, server.grpc_url))


def test_client_backend_against_the_real_server(served: tuple[Any, Path, dict[str, Any]]) -> None:
    """``Inspector.from_bundle(backend="triton")`` (the client backend), when this checkout has it."""
    server, bundle, _ = served
    color = frames(2, seed=9)
    with Inspector.from_bundle(bundle, backend="onnxruntime", config=CFG) as local:
        expected = local.inspect_batch(list(color))
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        try:
            remote = Inspector.from_bundle(bundle, backend="triton", url=url, protocol=protocol, config=CFG)
        except TypeError as exc:  # no url/protocol arguments: no client backend in this checkout
            pytest.skip(f"Inspector.from_bundle(backend='triton') is not available here: {exc}")
        with remote:
            assert_same(remote.inspect_batch(list(color)), expected)


# ------------------------------------------------------------------ without a server

def test_missing_environment_names_the_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(triton_server.ENV_VAR, raising=False)
    with pytest.raises(MissingDependencyError, match="nvidia-pytriton"):
        triton_server.find_tritonserver()
    with pytest.raises(MissingDependencyError, match="does not exist"):
        triton_server.find_tritonserver(tmp_path / "nope")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").touch()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    with pytest.raises(MissingDependencyError, match="pip install nvidia-pytriton"):
        triton_server.find_tritonserver(venv)
    assert triton_server.main(["--repo", str(tmp_path), "--env", str(venv)]) == 2
    (venv / "pyvenv.cfg").write_text("home = /root/.pyenv/versions/3.11.7/bin\nversion = 3.11.7\n")
    with pytest.raises(MissingDependencyError, match="not from the system Python.*_recursion_count.*/usr/bin/python3"):
        triton_server.find_tritonserver(venv)


def test_ci_builds_the_server_environment_before_the_readme_test_command() -> None:
    run = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in line]
    assert len(run) == 1 and run[0].startswith("bash .ci/triton_env && pip install"), run
    assert f"```bash\n{run[0]}\n```" in (ROOT / "README.md").read_text()


def test_command_line_is_loopback_only_and_loads_only_the_inspector(tmp_path: Path) -> None:
    pkg = tmp_path / "site-packages" / "pytriton"
    install = triton_server.TritonInstall(
        python_env=tmp_path / "venv", python_version="3.11", package_dir=pkg,
        server_bin=pkg / "tritonserver" / "bin" / "tritonserver", backends_dir=pkg / "tritonserver" / "backends",
        stub=pkg / "stub", libs_dir=tmp_path / "libs")
    for metrics in (None, 8002):
        cmd = triton_server.server_command(install, tmp_path / "repo", tmp_path / "b", http_port=1, grpc_port=2,
                                           metrics_port=metrics, models=("inspector",), shm_prefix="x_")
        addresses = [a.split("=", 1)[1] for a in cmd if a.split("=")[0].endswith("-address")]
        assert addresses and set(addresses) == {"127.0.0.1"}
        assert "--model-control-mode=explicit" in cmd and [a for a in cmd if a.startswith("--load-model")] == [
            "--load-model=inspector"]
        assert ("--allow-metrics=false" in cmd) == (metrics is None)
    env = triton_server.server_env(install)
    assert env["PATH"].startswith(str(tmp_path / "venv" / "bin")) and env["LD_LIBRARY_PATH"].endswith("libs")
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env
    assert json.dumps(sorted(env))  # plain strings only
    assert signal.SIGTERM  # the handle stops the group with SIGTERM, then SIGKILL (checked with the real server)
