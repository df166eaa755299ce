"""Export a bundle's defect classifier to ``classifier.onnx`` (inputs ``tokens`` / ``regions`` [/ ``descriptors``], outputs
``embedding`` / ``logits``, dynamic batch), lint it for TensorRT and check it against torch."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from protoinspect.export.onnx_lint import lint_onnx
from protoinspect.export.onnx_parity import PARITY_PROVIDER
from protoinspect.export.trt_ops import TRT_DOC_VERSION
from protoinspect.sdk.errors import ExportError

CLASSIFIER_ONNX = "classifier.onnx"
INPUTS = ("tokens", "regions")
OUTPUTS = ("embedding", "logits")
ATOL = 1e-4  # embeddings are unit vectors, logits kappa * cosine: absolute, scaled by kappa for logits
DEFAULT_OPSET = 17


def export_classifier_onnx(bundle_dir: str | Path, *, opset: int = DEFAULT_OPSET, num_random: int = 8) -> dict[str, Any]:
    """Export, lint and verify (torch vs onnxruntime on fresh random crops, batches 1 and ``num_random``);
    ``classifier.onnx`` and ``extra["classifier_onnx"]`` are added to the bundle.

    Raises:
        BundleError: no classifier in the bundle.
        ExportError: export, lint or parity failed (the bundle is left unchanged).
    """
    import onnx
    from protoinspect.sdk._imports import require
    from protoinspect.sdk.bundle import add_files, load_bundle
    from protoinspect.sdk.models.loading import load_classifier_net

    bundle = load_bundle(bundle_dir)
    net = load_classifier_net(bundle)
    cfg = net.config
    g, c = cfg.grid, cfg.in_channels
    rng = np.random.default_rng()
    with tempfile.TemporaryDirectory(prefix="protoinspect-clf-") as tmp:
        path = Path(tmp) / CLASSIFIER_ONNX
        r = cfg.descriptor_dim
        inputs = INPUTS + (("descriptors",) if r else ())
        sample = (torch.randn(2, c, g, g), torch.rand(2, 2, g, g)) + ((torch.randn(2, r),) if r else ())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(net, sample, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
                                  output_names=list(OUTPUTS), dynamic_axes={n: {0: "batch"} for n in (*inputs, *OUTPUTS)},
                                  do_constant_folding=True)
            except Exception as exc:
                raise ExportError(f"classifier export failed: {type(exc).__name__}: {exc}") from exc
        onnx.checker.check_model(str(path), full_check=True)
        problems = lint_onnx(path)
        if problems:
            raise ExportError(f"classifier.onnx is not TensorRT {TRT_DOC_VERSION} compatible: {problems}")
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=[PARITY_PROVIDER])
        diff = {"embedding": 0.0, "logits": 0.0}
        for n in (1, num_random):
            tokens = rng.standard_normal((n, c, g, g)).astype(np.float32) * rng.uniform(0.1, 5.0)
            regions = rng.uniform(0, 1, (n, 2, g, g)).astype(np.float32)
            feed = {"tokens": tokens, "regions": regions}
            if r:
                feed["descriptors"] = rng.standard_normal((n, r)).astype(np.float32)
            with torch.no_grad():
                t_out = [t.numpy() for t in net(*(torch.from_numpy(feed[k]) for k in inputs))]
            o_out = session.run(list(OUTPUTS), feed)
            for name, t, o in zip(OUTPUTS, t_out, o_out):
                if o.shape != t.shape:
                    raise ExportError(f"classifier.onnx output {name} is {o.shape}, torch gives {t.shape}")
                diff[name] = max(diff[name], float(np.abs(o - t).max()))
        tol = {"embedding": ATOL, "logits": ATOL * cfg.kappa}
        failed = [f"{k} max |diff| {diff[k]:.3g} > {tol[k]:.3g}" for k in diff if not diff[k] <= tol[k]]
        if failed:
            raise ExportError("classifier ONNX parity check failed: " + "; ".join(failed))
        info = {"file": CLASSIFIER_ONNX, "opset": opset, "inputs": list(inputs), "outputs": list(OUTPUTS),
                "parity": {"max_abs_diff": diff, "tolerance": tol, "num_random": num_random + 1,
                           "provider": PARITY_PROVIDER, "passed": True},
                "tensorrt_lint": {"tensorrt_doc_version": TRT_DOC_VERSION, "problems": []}}
        add_files(bundle.path, {CLASSIFIER_ONNX: path.read_bytes()}, extra={"classifier_onnx": info})
    return info
