"""The ``inspector`` model of a ProtoInspect Triton repository (copied there as ``inspector/<version>/model.py``).

Triton's Python backend loads this file and calls :class:`TritonPythonModel`: ``initialize`` once per model
instance, ``execute`` with a list of requests (dynamic batching may hand several at once), ``finalize`` at
unload. Each request carries a batch of raw uint8 frames (input ``FRAME``, N x H x W x C); the answer holds
what an in-process :class:`~protoinspect.sdk.result.InspectionResult` holds, as the tensors of
:mod:`protoinspect.sdk.triton_tensors` (VERDICT, SCORE, MODEL_MAP, FRAME_SIZE, DEFECTS, IMAGE_CLASS_ID,
IMAGE_CLASS_NAME, RESULT_INFO). This file only glues ``pb_utils`` to that module and to
``Inspector.from_bundle``.

Why ONNX Runtime inside the Python backend (and not a BLS or ensemble over the ``detector`` /
``classifier`` models of the same repository): the pipeline is mask -> detect -> decide -> regions ->
classify, with data-dependent steps between the graphs (the classifier runs only on anomalous frames, on
crops of the regions found on the detector's map, with the object mask). An ensemble cannot express that
control flow; a BLS model could, but would move the frame-sized tensors and the detector's features between
processes for every frame and re-implement the stages' glue against ``pb_utils`` instead of reusing them.
Running ``Inspector.from_bundle(bundle, backend="onnxruntime")`` in the stub process executes exactly the
stages of an in-process Inspector - pre-processing through ``protoinspect.sdk.preprocess`` stays the one
source of truth - so the server's results equal the in-process ones within float tolerance. The
``detector`` / ``classifier`` (ONNX Runtime, TensorRT) models in the repository are there for clients that
want the raw graphs; the inspector does not call them.

Versions: the model version directory holds ``model.py`` and a copy of the bundle (``bundle/``); the
version number is the repository's integer for that bundle id (``protoinspect_repository.json``), and the
config's ``parameters`` carry ``bundle_id`` so a client can check what the server runs.

The server's Python environment needs ``protoinspect[onnx]`` installed (numpy, opencv, onnxruntime).
"""

from __future__ import annotations

import json
import os
from typing import Any

try:
    import triton_python_backend_utils as pb_utils  # provided by Triton's Python-backend stub
except ImportError:  # imported outside Triton (documentation, packaging checks)
    pb_utils = None


def _error(message: str) -> Any:
    """A ``TritonError`` with the INVALID_ARG code when this Triton version has codes."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


class TritonPythonModel:
    """Runs ProtoInspect's Inspector (ONNX Runtime) on the frames of each request."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the bundle of this model version (``<repository>/<version>/bundle``) into an Inspector.

        ``args`` is Triton's: ``model_config`` (JSON), ``model_repository``, ``model_version``,
        ``model_instance_kind`` (``CPU``/``GPU``) and ``model_instance_device_id``.
        """
        if pb_utils is None:
            raise ImportError("triton_python_backend_utils is missing: this file runs inside Triton's Python backend")
        from protoinspect.sdk import triton_tensors
        from protoinspect.sdk.config import InspectorConfig
        from protoinspect.sdk.inspector import Inspector

        self._tensors = triton_tensors
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        bundle = os.path.join(args["model_repository"], str(args["model_version"]), "bundle")
        if not os.path.isdir(bundle):  # a repository copied without its version folder layout
            bundle = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundle")
        inspector_config = InspectorConfig.from_dict(json.loads(params.get("inspector_config") or "{}"))
        device = "cpu"
        if str(args.get("model_instance_kind", "CPU")).upper() == "GPU":
            device = f"cuda:{args.get('model_instance_device_id', '0')}"
        self.inspector = Inspector.from_bundle(bundle, backend="onnxruntime", device=device, config=inspector_config)
        expected = params.get("bundle_id")
        if expected and self.inspector.bundle.manifest.bundle_id != expected:
            got = self.inspector.bundle.manifest.bundle_id
            self.inspector.close()
            raise RuntimeError(f"bundle in {bundle} has id {got}, config.pbtxt says {expected}: re-export with "
                               "`protoinspect export-triton BUNDLE --repo DIR --overwrite`")

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order; a bad request gets an error response, the others still run."""
        from protoinspect.sdk.errors import InputError, ProtoInspectError

        responses = []
        for request in requests:
            try:
                frames = pb_utils.get_input_tensor_by_name(request, self._tensors.INPUT_FRAME)
                if frames is None:
                    raise InputError(f"request has no input '{self._tensors.INPUT_FRAME}'")
                batch = self._tensors.frame_batch(frames.as_numpy())
                results = self.inspector.inspect_batch(list(batch))
                outputs = self._tensors.results_to_tensors(results)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]))
            except ProtoInspectError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(
                    f"inspector: {type(exc).__name__}: {exc}")))
        return responses

    def finalize(self) -> None:
        """Close the Inspector (its ONNX Runtime sessions)."""
        inspector = getattr(self, "inspector", None)
        if inspector is not None:
            inspector.close()
