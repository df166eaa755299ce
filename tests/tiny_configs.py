"""Override lists for tiny, seconds-long training runs in the tests (detector and discovery)."""

TINY_DETECTOR = [
    "image_size=64", "crop=32", "steps=4", "batch=4", "checkpoint_every=4", "min_holdout=2", "detector.num_prototypes=16",
    "detector.embed_dim=32", "detector.num_heads=2", "detector.blur_sigma=1.0",
]
TINY_DISCOVERY = ["contrastive_steps=6", "prototype_steps=6", "batch=8", "classifier.grid=4", "classifier.embed_dim=16",
                  "classifier.num_heads=2", "classifier.proj_dim=8", "jitters=2", "k_max=4", "num_threads=1",
                  "pretrain_steps=2", "pretrain_per_kind=1"]
