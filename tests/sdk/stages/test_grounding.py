"""Tests of protoinspect.sdk.stages.grounding.prompt_to_box with a tiny randomly initialised Grounding DINO.

The model, a 10-word BERT WordPiece tokenizer and the image processor are built offline and saved to a
temporary folder, then loaded back through the local-directory route (``local_files_only=True``).
A random model's boxes mean nothing: the tests check shapes, bounds, agreement with transformers' own
post-processing, and the errors.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None
    or importlib.util.find_spec("PIL") is None,
    reason="transformers, torch or Pillow not installed (pip install 'protoinspect[grounding]')")

PROMPT = "a metal bracket"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import transformers as tf

    out = tmp_path_factory.mktemp("gdino")
    vocab = out / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n.\na\nmetal\nbracket\n")
    image_processor_cls = getattr(tf, "GroundingDinoImageProcessorPil", None) or tf.GroundingDinoImageProcessor
    processor = tf.GroundingDinoProcessor(image_processor=image_processor_cls(size={"shortest_edge": 64, "longest_edge": 96}),
                                          tokenizer=tf.BertTokenizerFast(vocab_file=str(vocab)))
    config = tf.GroundingDinoConfig(
        backbone_config=tf.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                      num_heads=[1, 1, 1, 1], window_size=2, out_features=["stage2", "stage3", "stage4"]),
        text_config=tf.BertConfig(vocab_size=9, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=5, num_feature_levels=4,
        encoder_n_points=1, decoder_n_points=1, max_text_len=32, use_pretrained_backbone=False, use_timm_backbone=False)
    torch.manual_seed(0)
    tf.GroundingDinoForObjectDetection(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> tuple[Any, Any]:
    from protoinspect.sdk.stages.grounding import load_grounding_model

    return load_grounding_model(str(model_dir))


def _frame() -> np.ndarray:
    frame = np.random.default_rng(0).integers(0, 60, (100, 150, 3), dtype=np.uint8)
    frame[30:70, 40:110] = 220
    return frame


def test_box_from_local_dir_matches_transformers_post_processing(model_dir: Path, loaded: tuple[Any, Any]) -> None:
    import torch

    from protoinspect.sdk.stages.grounding import prompt_to_box

    frame = _frame()
    box = prompt_to_box(frame, PROMPT, model_dir=str(model_dir), box_threshold=0.0)
    x1, y1, x2, y2 = box
    assert all(isinstance(v, int) for v in box) and 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 100
    assert prompt_to_box(frame, PROMPT, model=loaded, box_threshold=0.0) == box

    processor, net = loaded
    inputs = processor(images=np.ascontiguousarray(frame[:, :, ::-1]), text="a metal bracket.", return_tensors="pt")
    with torch.no_grad():
        outputs = net(**inputs)
    ref = processor.post_process_grounded_object_detection(outputs, inputs.input_ids, threshold=0.0, text_threshold=0.0,
                                                           target_sizes=[(100, 150)])[0]
    top = ref["boxes"][int(ref["scores"].argmax())].tolist()
    clipped = [min(max(top[0], 0), 149), min(max(top[1], 0), 99), min(max(top[2], 0), 150), min(max(top[3], 0), 100)]
    assert np.allclose(box, clipped, atol=1.01)


def test_gray_frame_and_errors(model_dir: Path, loaded: tuple[Any, Any]) -> None:
    from protoinspect.sdk.stages.grounding import prompt_to_box

    gray = np.ascontiguousarray(_frame()[:, :, 1])
    x1, y1, x2, y2 = prompt_to_box(gray, PROMPT, model=loaded, box_threshold=0.0)
    assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 100
    with pytest.raises(ConfigError, match="metal bracket"):
        prompt_to_box(gray, PROMPT, model=loaded, box_threshold=1.0)
    with pytest.raises(ConfigError, match="not found"):
        prompt_to_box(gray, PROMPT, model_dir=str(model_dir / "missing"))
    for bad in ({"prompt": " "}, {"box_threshold": 1.5}, {"color_order": "BGR"}):
        kwargs: dict[str, Any] = {"prompt": PROMPT, "model": loaded, **bad}
        with pytest.raises(ConfigError):
            prompt_to_box(gray, **kwargs)
    with pytest.raises(ConfigError):
        prompt_to_box(np.zeros((4, 4), np.float32), PROMPT, model=loaded)
