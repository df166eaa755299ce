"""Fakes of Inspector stages and runtimes for tests (the one place tests define them)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class FakeClassifierRuntime:
    """A classifier runtime whose crop k gets class k % num_classes (logit kappa); records its inputs and closing."""

    name = "fake"

    def __init__(self, kappa: float = 10.0, num_classes: int = 3) -> None:
        self.kappa, self.num_classes = kappa, num_classes
        self.inputs: list[dict[str, np.ndarray]] = []
        self.closed = False

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs.append(dict(inputs))
        n = inputs["tokens"].shape[0]
        logits = np.zeros((n, self.num_classes), np.float32)
        logits[np.arange(n), np.arange(n) % self.num_classes] = self.kappa
        return {"logits": logits}

    def close(self) -> None:
        self.closed = True
