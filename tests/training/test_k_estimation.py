"""estimate_k: every criterion and the consensus recover K on easy blobs; bad arguments; determinism; the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.training.k_estimation import (
    CRITERIA,
    DEFAULT_METHOD,
    KEstimate,
    combine_picks,
    estimate_k,
    main,
    pick_k,
)


def blobs(k: int, seed: int, *, dims: int = 2, separation: float = 12.0, anisotropic: bool = False,
          unequal: bool = False, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """``k`` unit-sd Gaussian blobs on a ring of radius so neighbouring centres are ``separation`` apart."""
    rng = np.random.default_rng(seed)
    radius = separation / (2 * np.sin(np.pi / k))
    angles = 2 * np.pi * np.arange(k) / k
    centres = np.zeros((k, dims))
    centres[:, 0], centres[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
    sizes = np.full(k, n // k) if not unequal else np.maximum(15, (n * np.linspace(1, 3, k) / (2 * k)).astype(int))
    xs, ys = [], []
    for j in range(k):
        z = rng.normal(size=(sizes[j], dims))
        if anisotropic:
            z *= np.linspace(1.0, 0.3, dims)
            z = z @ np.linalg.qr(rng.normal(size=(dims, dims)))[0]
        xs.append(centres[j] + z)
        ys.append(np.full(sizes[j], j))
    return np.concatenate(xs), np.concatenate(ys)


CASES = [  # (k, dims, anisotropic, unequal)
    (2, 2, False, False),
    (3, 5, True, False),
    (4, 2, False, True),
    (5, 3, True, True),
    (6, 2, False, False),
]


@pytest.mark.parametrize(("k", "dims", "anisotropic", "unequal"), CASES)
def test_every_criterion_and_consensus_recover_k_on_easy_blobs(k: int, dims: int, anisotropic: bool,
                                                               unequal: bool) -> None:
    x, _ = blobs(k, seed=k, dims=dims, anisotropic=anisotropic, unequal=unequal)
    est = estimate_k(x, 2, 8)
    assert est.method == DEFAULT_METHOD == "consensus"
    assert set(est.picks) == set(CRITERIA)
    for name in ("silhouette", "eigengap", "bic", "stability"):
        assert est.picks[name] == k, (name, est.scores[name])
    assert est.k == k


@pytest.mark.parametrize("method", list(CRITERIA))
def test_a_single_method_runs_only_that_criterion(method: str) -> None:
    x, _ = blobs(3, seed=1)
    est = estimate_k(x, 2, 6, method)
    assert isinstance(est, KEstimate)
    assert list(est.scores) == [method] and list(est.picks) == [method]
    assert est.k == est.picks[method] == 3
    assert set(est.scores[method]) == set(range(2, 7))


def test_k_min_one_is_scored_by_bic_and_eigengap_and_skipped_by_silhouette() -> None:
    x = np.random.default_rng(0).normal(size=(120, 2))  # one cluster
    assert estimate_k(x, 1, 4, "bic").k == 1
    est = estimate_k(x, 1, 4)
    assert 1 in est.scores["bic"] and 1 in est.scores["eigengap"]
    assert 1 not in est.scores["silhouette"] and 1 not in est.scores["stability"]


def test_same_seed_same_result_and_scores() -> None:
    x, _ = blobs(4, seed=3, separation=5.0)
    a, b = estimate_k(x, 2, 7, seed=5), estimate_k(x, 2, 7, seed=5)
    assert a == b


@pytest.mark.parametrize(("k_min", "k_max", "needle"), [
    (0, 4, "k_min must be >= 1"),
    (5, 4, "k_max must be >= k_min"),
    (2, 40, "k_max must be < the number of points (40)"),
    (2.0, 4, "k_min must be an integer"),
])
def test_bad_bounds_are_config_errors(k_min: int, k_max: int, needle: str) -> None:
    x = np.zeros((40, 2)) + np.arange(40)[:, None]
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        estimate_k(x, k_min, k_max)


def test_unknown_method_bad_seed_and_k1_only_silhouette_are_config_errors() -> None:
    x, _ = blobs(2, seed=0)
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        estimate_k(x, 2, 4, seed=-1)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        estimate_k(x, 2, 4, seed=0.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="method must be one of"):
        estimate_k(x, 2, 4, "gap")
    with pytest.raises(ConfigError, match="cannot score k = 1"):
        estimate_k(x, 1, 1, "silhouette")


@pytest.mark.parametrize(("features", "needle"), [
    (np.zeros((0, 3)), "empty"),
    (np.zeros((10, 0)), "empty"),
    (np.zeros(10), "2-D"),
    (np.array([["a", "b"]] * 10), "real numbers"),
])
def test_unusable_features_are_input_errors(features: np.ndarray, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        estimate_k(features, 1, 2)


def test_nan_features_name_the_row() -> None:
    x, _ = blobs(2, seed=0)
    x[7, 1] = np.nan
    with pytest.raises(InputError, match="NaN or infinite values in 1 row\\(s\\), first row 7"):
        estimate_k(x, 2, 4)


def test_combine_picks_majority_then_lower_median() -> None:
    assert combine_picks([3, 3, 5, 8]) == 3
    assert combine_picks([4, 5, 6, 7]) == 5
    assert combine_picks([2, 2, 6, 6]) == 2
    with pytest.raises(ConfigError):
        combine_picks([])


def test_stability_ties_go_to_the_larger_k_others_to_the_smaller() -> None:
    scores = {2: 1.0, 3: 0.995, 4: 0.7}
    assert pick_k("stability", scores) == 3
    assert pick_k("silhouette", {2: 0.5, 3: 0.5, 4: 0.1}) == 2


def test_cli_prints_estimated_and_true_k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(3, seed=2)
    np.save(tmp_path / "f.npy", x)
    np.save(tmp_path / "l.npy", y)
    assert main(["--features", str(tmp_path / "f.npy"), "--labels", str(tmp_path / "l.npy"),
                 "--k-min", "2", "--k-max", "5"]) == 0
    out = capsys.readouterr().out
    assert "true K=3" in out
    assert any(line.startswith("consensus") and " 3 " in line and "exact" in line for line in out.splitlines())


def test_cli_reports_bad_input_as_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--features", str(tmp_path / "missing.npy")]) == 2
    assert "cannot read" in capsys.readouterr().err
    np.save(tmp_path / "f.npy", np.ones((5, 2)))
    assert main(["--features", str(tmp_path / "f.npy"), "--k-max", "8"]) == 2
    assert "k_max must be < the number of points" in capsys.readouterr().err
