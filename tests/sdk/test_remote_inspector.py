"""The Triton client backend (sdk/remote_inspector.py, sdk/triton_client.py) against a fake tritonclient client.

The fake ``InferenceServerClient`` stands in for the network only: the requests are built with tritonclient's
real ``InferInput`` / ``InferRequestedOutput``, the server side is the real ``export/triton_inspector_model.py``
(``TritonPythonModel`` with a stand-in ``pb_utils``) over the bundle, and the failures are tritonclient's own
``InferenceServerException`` / the socket errors its HTTP client raises (as measured against closed ports).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxruntime")

import tritonclient.grpc as tc_grpc
import tritonclient.http as tc_http
from protoinspect.export import triton_inspector_model
from protoinspect.sdk import triton_client, triton_tensors
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError, ConfigError, InputError, ServerError
from protoinspect.sdk.inspector import Inspector
from protoinspect.sdk.live_stream import LiveInspector
from protoinspect.sdk.remote_inspector import TritonInspector
from tritonclient.utils import InferenceServerException

#: the server's inspector config: every frame anomalous, so regions and classes run (the client adopts it)
SERVER_CFG = InspectorConfig(image_threshold=float("-inf"))


class _PbTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _PbError:
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


FAKE_PB = SimpleNamespace(
    TritonError=_PbError, Tensor=_PbTensor,
    InferenceResponse=lambda output_tensors, error=None: SimpleNamespace(output_tensors=output_tensors, error=error),
    get_input_tensor_by_name=lambda request, name: request.get(name))


class FakeServer:
    """One Triton server serving the ``inspector`` model of ``bundle`` through the real model.py."""

    def __init__(self, bundle: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, *, version: str = "1",
                 config: InspectorConfig | None = None, params: dict[str, str] | None = None) -> None:
        monkeypatch.setattr(triton_inspector_model, "pb_utils", FAKE_PB)
        (tmp / version).mkdir(parents=True, exist_ok=True)
        link = tmp / version / "bundle"
        if not link.exists():
            link.symlink_to(bundle, target_is_directory=True)
        cfg = config or InspectorConfig()
        self.params = {"bundle_id": json.loads((bundle / "manifest.json").read_text())["bundle_id"],
                       "inspector_config": json.dumps(cfg.to_dict()), **(params or {})}
        self.model = triton_inspector_model.TritonPythonModel()
        self.model.initialize({"model_config": json.dumps({"parameters": {
            k: {"string_value": v} for k, v in self.params.items()}}), "model_repository": str(tmp),
            "model_version": version, "model_instance_kind": "CPU"})
        self.version, self.answer_version = version, version
        self.live = self.ready = self.model_ready = True
        self.fail: BaseException | None = None  # raised by every call (server down, timeout, ...)
        self.fail_infer: BaseException | None = None
        self.infers: list[tuple[int, ...]] = []
        self.kwargs: list[dict[str, Any]] = []

    def close(self) -> None:
        self.model.finalize()


def fake_module(server: FakeServer, protocol: str) -> SimpleNamespace:
    """A stand-in for tritonclient.grpc / .http whose client talks to ``server``."""
    real = tc_grpc if protocol == "grpc" else tc_http

    class Client:
        def __init__(self, url: str, **kwargs: Any) -> None:
            server.kwargs.append({"url": url, **kwargs})

        def _check(self, kwargs: dict[str, Any]) -> None:
            assert ("client_timeout" in kwargs) == (protocol == "grpc")
            if server.fail is not None:
                raise server.fail

        def is_server_live(self, **kw: Any) -> bool:
            self._check(kw)
            return server.live

        def is_server_ready(self, **kw: Any) -> bool:
            self._check(kw)
            return server.ready

        def is_model_ready(self, model: str, version: str = "", **kw: Any) -> bool:
            self._check(kw)
            return server.model_ready and model == "inspector" and version in ("", server.version)

        def get_model_config(self, model: str, version: str = "", as_json: bool = False, **kw: Any) -> dict[str, Any]:
            self._check(kw)
            cfg = {"name": model, "max_batch_size": 8, "version_policy": {"specific": {"versions": [server.version]}},
                   "parameters": {k: {"string_value": v} for k, v in server.params.items()}}
            return {"config": cfg} if protocol == "grpc" else cfg

        def infer(self, model: str, inputs: list[Any], model_version: str = "", outputs: Any = None,
                  **kw: Any) -> SimpleNamespace:
            self._check(kw)
            if server.fail_infer is not None:
                raise server.fail_infer
            (inp,) = inputs
            raw = getattr(inp, "_raw_content", None) if protocol == "grpc" else getattr(inp, "_raw_data", None)
            if inp.datatype() != "UINT8":  # Triton core checks the dtype against the config before the model
                raise InferenceServerException(f"inference input 'FRAME' data-type is '{inp.datatype()}', but model "
                                               f"'{model}' expects 'UINT8'", status="StatusCode.INVALID_ARGUMENT")
            batch = np.frombuffer(raw, dtype=np.uint8).reshape(inp.shape())
            server.infers.append(batch.shape)
            (response,) = server.model.execute([{triton_tensors.INPUT_FRAME: _PbTensor("FRAME", batch)}])
            if response.error is not None:
                status = "StatusCode.INVALID_ARGUMENT" if protocol == "grpc" else "400"
                raise InferenceServerException(response.error.message, status=status)
            arrays = {t.name: t.array for t in response.output_tensors}
            answer = ({"model_version": server.answer_version} if protocol == "http"
                      else SimpleNamespace(model_version=server.answer_version))
            return SimpleNamespace(as_numpy=arrays.get, get_response=lambda: answer)

        def close(self) -> None:
            pass

    return SimpleNamespace(InferenceServerClient=Client, InferInput=real.InferInput,
                           InferRequestedOutput=real.InferRequestedOutput)


@pytest.fixture()
def served(discovery_bundle: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """The discovery bundle (detector + classifier) served by a fake Triton server; protocol modules patched."""
    server = FakeServer(discovery_bundle[1], tmp_path / "repo" / "inspector", monkeypatch, config=SERVER_CFG)
    monkeypatch.setattr(triton_client, "protocol_module", lambda protocol: fake_module(server, protocol)
                        if protocol in triton_client.PROTOCOLS else pytest.fail(protocol))
    yield server
    server.close()


def _frames(tile: Path, n: int = 6) -> list[np.ndarray]:
    import cv2

    paths = sorted(p for p in tile.rglob("*.png") if "test" in p.parts and "ground_truth" not in p.parts)[:n]
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


def _same(remote: Any, local: Any) -> None:
    assert remote.verdict == local.verdict
    assert remote.anomaly_score == pytest.approx(local.anomaly_score, abs=1e-5)
    np.testing.assert_allclose(remote.model_map, local.model_map, atol=1e-5)
    assert remote.frame_size == local.frame_size
    assert [d.to_dict() for d in remote.defects] == [d.to_dict() for d in local.defects]
    assert (remote.image_class_id, remote.image_class_name) == (local.image_class_id, local.image_class_name)
    assert remote.bundle_id == local.bundle_id and remote.mask is None


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_results_equal_in_process_onnxruntime(served: FakeServer, discovery_bundle: tuple[Path, Path],
                                              discovery_tile: Path, protocol: str) -> None:
    frames = _frames(discovery_tile)
    with Inspector.from_bundle(discovery_bundle[1], backend="onnxruntime", config=SERVER_CFG) as local:
        expected = local.inspect_batch(frames)
    assert all(r.verdict.value != "OK" for r in expected) and any(r.defects for r in expected)
    assert any(r.image_class_name for r in expected)
    with Inspector.from_bundle(discovery_bundle[1], backend="triton", url="127.0.0.1:9", protocol=protocol,
                               timeout_s=5) as remote:
        assert isinstance(remote, TritonInspector) and remote.model_version == "1"
        one = [remote.inspect(f) for f in frames]
        batch = remote.inspect_batch(frames)
        desc = remote.describe()
    for a, b, want in zip(one, batch, expected):
        _same(a, want)
        _same(b, want)
        assert "round_trip" in a.timings_ms and "detect" in a.timings_ms
    assert [r.frame_index for r in one + batch] == list(range(2 * len(frames)))
    assert server_shapes(served)[-1][0] == len(frames)  # the batch went as one request
    assert desc["backend"]["name"] == "triton" and desc["backend"]["protocol"] == protocol
    assert desc["bundle_id"] == expected[0].bundle_id and desc["closed"] is False
    json.dumps(desc)
    kwargs = served.kwargs[0]
    assert kwargs["url"] == "127.0.0.1:9"
    if protocol == "http":
        assert kwargs["network_timeout"] == 5 and kwargs["connection_timeout"] == 5


def server_shapes(server: FakeServer) -> list[tuple[int, ...]]:
    return server.infers


def test_frames_are_checked_locally_and_colour_order_is_converted(served: FakeServer, discovery_bundle: tuple[Path, Path],
                                                                  discovery_tile: Path) -> None:
    frame = _frames(discovery_tile, 1)[0]
    with TritonInspector.from_bundle(discovery_bundle[1], config=InspectorConfig(color_order="rgb")) as remote:
        for bad in (None, frame.astype(np.float32), frame[:, :, :2], frame[:0]):
            with pytest.raises(InputError):
                remote.inspect(bad)  # type: ignore[arg-type]
        assert served.infers == []  # nothing of it was sent
        rgb = remote.inspect(np.ascontiguousarray(frame[:, :, ::-1]))
        view = remote.inspect(frame[::-1, ::-1][::-1, ::-1][:, :, ::-1])  # a strided view, sent as a copy
        gray = remote.inspect(frame[:, :, 0])
    with Inspector.from_bundle(discovery_bundle[1], backend="onnxruntime", config=SERVER_CFG) as local:
        _same(rgb, local.inspect(frame))
        _same(view, local.inspect(frame))
        _same(gray, local.inspect(frame[:, :, 0]))


def test_server_down_timeout_and_not_ready_are_typed(served: FakeServer, discovery_bundle: tuple[Path, Path],
                                                     discovery_tile: Path) -> None:
    bundle = discovery_bundle[1]
    served.fail = InferenceServerException("failed to connect to all addresses; last error: UNKNOWN: "
                                           "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
                                           status="StatusCode.UNAVAILABLE")
    with pytest.raises(ServerError, match="no Triton server at 127.0.0.1:1.*tritonserver --model-repository"):
        Inspector.from_bundle(bundle, backend="triton", url="127.0.0.1:1")
    served.fail = ConnectionRefusedError(111, "Connection refused")  # what tritonclient.http raises
    with pytest.raises(ServerError, match="no Triton server.*no local fallback"):
        TritonInspector.from_bundle(bundle, protocol="http")
    served.fail = InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")
    with pytest.raises(ServerError, match="within timeout_s=2 s.*timeout_s="):
        TritonInspector.from_bundle(bundle, timeout_s=2)
    served.fail = TimeoutError("timed out")  # tritonclient.http's network_timeout
    with pytest.raises(ServerError, match="within timeout_s"):
        TritonInspector.from_bundle(bundle, protocol="http")
    served.fail = None
    served.model_ready = False
    with pytest.raises(ServerError, match="model 'inspector' is not ready.*export-triton"):
        TritonInspector.from_bundle(bundle)
    served.model_ready = True
    with pytest.raises(ServerError, match="version 7 is not ready"):
        TritonInspector.from_bundle(bundle, model_version=7)
    served.ready = False
    with pytest.raises(ServerError, match="not ready"):
        TritonInspector.from_bundle(bundle)
    served.ready = True
    frame = _frames(discovery_tile, 1)[0]
    with TritonInspector.from_bundle(bundle, protocol="http") as remote:  # failures after connecting
        served.fail_infer = TimeoutError("timed out")
        with pytest.raises(ServerError, match="did not answer the inference request within"):
            remote.inspect(frame)
        served.fail_infer = InferenceServerException("Request for unknown model: 'inspector' has no available "
                                                     "versions", status="400")
        with pytest.raises(ServerError, match="not ready or not served"):
            remote.inspect(frame)
        served.fail_infer = InferenceServerException("internal boom", status="500")
        with pytest.raises(ServerError, match=r"\[500\] internal boom"):
            remote.inspect(frame)
        served.fail_infer = None
        assert remote.inspect(frame).frame_index == 3  # still usable; failed frames kept their indices
    with pytest.raises(ServerError, match="closed"):
        remote.inspect(frame)


def test_bad_arguments_are_config_errors(served: FakeServer, discovery_bundle: tuple[Path, Path]) -> None:
    bundle = discovery_bundle[1]
    with pytest.raises(ConfigError, match="protocol"):
        Inspector.from_bundle(bundle, backend="triton", protocol="websocket")
    with pytest.raises(ConfigError, match="without a scheme"):
        TritonInspector.from_bundle(bundle, url="http://localhost:8000", protocol="http")
    for kwargs in ({"timeout_s": 0}, {"model_version": "latest"}, {"model_version": 0}):
        with pytest.raises(ConfigError):
            TritonInspector.from_bundle(bundle, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device"):
        Inspector.from_bundle(bundle, backend="triton", device="cuda:0")
    with pytest.raises(ConfigError, match="unknown arguments"):
        Inspector.from_bundle(bundle, backend="triton", port=8001)
    with pytest.raises(ConfigError, match="backend='triton' only"):
        Inspector.from_bundle(bundle, backend="onnxruntime", url="localhost:8001")
    with pytest.raises(ConfigError, match="image_threshold: client 0.1"):
        TritonInspector.from_bundle(bundle, config=InspectorConfig(image_threshold=0.1))


def test_another_bundle_or_version_on_the_server_is_refused(served: FakeServer, discovery_bundle: tuple[Path, Path],
                                                            discovery_tile: Path) -> None:
    det, disc = discovery_bundle
    det_id = json.loads((det / "manifest.json").read_text())["bundle_id"]
    with pytest.raises(BundleError, match=f"bundle {served.params['bundle_id']}.*is {det_id}.*export-triton"):
        TritonInspector.from_bundle(det)
    frame = _frames(discovery_tile, 1)[0]
    with TritonInspector.from_bundle(disc, model_version=1) as remote:
        served.answer_version = "2"  # the repository changed under the client
        with pytest.raises(BundleError, match="version 2, not version 1"):
            remote.inspect(frame)
        served.answer_version = "1"
        original = served.model.execute

        def other_bundle(requests: list[Any]) -> list[Any]:  # a server whose answers carry another bundle id
            responses = original(requests)
            for t in responses[0].output_tensors:
                if t.name == triton_tensors.RESULT_INFO:
                    info = json.loads(t.array.reshape(-1)[0])
                    t.array = np.array([[json.dumps({**info, "bundle_id": det_id}).encode()]], dtype=object)
            return responses

        served.model.execute = other_bundle  # type: ignore[method-assign]
        with pytest.raises(BundleError, match=f"answered with bundle {det_id}"):
            remote.inspect(frame)
        served.model.execute = original  # type: ignore[method-assign]
    served.params.pop("inspector_config")
    served.params["bundle_id"] = json.loads((disc / "manifest.json").read_text())["bundle_id"]
    with pytest.raises(ServerError, match="not a ProtoInspect inspector model"):
        TritonInspector.from_bundle(disc)


def test_wrong_dtype_at_the_server_is_an_input_error(served: FakeServer, discovery_bundle: tuple[Path, Path]) -> None:
    with TritonInspector.from_bundle(discovery_bundle[1]) as remote:
        two_channels = np.zeros((1, 64, 64, 2), dtype=np.uint8)  # past the local checks: model.py refuses it
        with pytest.raises(InputError, match="refused the frames.*C = 3"):
            remote.connection.infer(two_channels, remote.model_version)
        floats = tc_grpc.InferInput("FRAME", [1, 8, 8, 3], "FP32")
        floats.set_data_from_numpy(np.zeros((1, 8, 8, 3), dtype=np.float32))
        with pytest.raises(InputError, match="data-type is 'FP32'"):
            remote.connection.call("the inference request", "infer", "inspector", [floats])


def test_live_stream_over_the_remote_inspector(served: FakeServer, discovery_bundle: tuple[Path, Path],
                                               discovery_tile: Path) -> None:
    frames = _frames(discovery_tile, 4)
    with Inspector.from_bundle(discovery_bundle[1], backend="onnxruntime", config=SERVER_CFG) as local:
        expected = [local.inspect(f) for f in frames]
    config = InspectorConfig(drop_policy="drop_oldest", queue_size=2)
    with TritonInspector.from_bundle(discovery_bundle[1], config=config) as remote:
        with LiveInspector(remote, workers=3) as live:
            assert live.drop_policy == "drop_oldest" and live.queue_size == 2
            for f in frames * 3:
                live.submit(f)
        items = list(live.results(timeout=30))
    assert [i.frame_id for i in items] == list(range(12))
    c = live.counts
    assert c.submitted == 12 and c.inspected + c.dropped == 12 and c.failed == 0
    for item in items:
        if item.dropped:
            assert item.drop_reason == "drop_oldest"
        else:
            _same(item.result, expected[item.frame_id % 4])
    slow = InspectorConfig(drop_policy="drop_newest", queue_size=1)
    served.fail_infer = None
    original = served.model.execute
    served.model.execute = lambda requests: (time.sleep(0.05), original(requests))[1]  # type: ignore[method-assign]
    with TritonInspector.from_bundle(discovery_bundle[1], config=slow) as remote, LiveInspector(remote) as live:
        for f in frames * 2:
            live.submit(f)
    got = list(live.results(timeout=30))
    assert any(i.dropped and i.drop_reason == "drop_newest" for i in got)
    assert all(i.result is not None for i in got if not i.dropped)
