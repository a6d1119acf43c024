"""A tiny random CLIP checkpoint folder for the judge's tests, the edit flow's judged-edit
tests and ``benchmarks/judge.py`` (``from tiny_clip import write_tiny_clip``; tests/ is on
sys.path under pytest). Needs only MLX: weights are written by pbmlx in MLX layout."""

from __future__ import annotations

import json
from pathlib import Path


def byte_symbols() -> list[str]:
    """CLIP's byte -> printable-character table in vocabulary order: the printable latin-1
    bytes as themselves, then the other 68 bytes as U+0100... in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
TINY_VISION = {**TINY_TEXT, "image_size": 32, "patch_size": 8}


def write_tiny_clip(
    folder: Path,
    seed: int = 0,
    text: dict | None = None,
    vision: dict | None = None,
    projection_dim: int = 16,
) -> Path:
    """A random CLIP checkpoint folder (tiny unless ``text`` / ``vision`` say otherwise):
    config.json in transformers' CLIPModel form, weights written by pbmlx in MLX layout
    (safetensors metadata ``format: mlx``), and a byte-level CLIP tokenizer with no merges
    (every byte a token). No torch/transformers needed: this is the judge's integration test,
    CLIP's own parity is test_clip.py's. benchmarks/judge.py builds a ViT-B/32-sized one."""
    import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
    import mlx.core as mx  # isort: skip
    from mlx.utils import tree_flatten

    from pbmlx.models.clip import CLIPConfig, CLIPModel
    from pbmlx.models.weights import MLX_FORMAT

    folder.mkdir(parents=True)
    symbols = byte_symbols()
    vocab = {t: i for i, t in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "model_type": "clip",
        "projection_dim": projection_dim,
        "text_config": {
            **(text or TINY_TEXT),
            "vocab_size": len(vocab),
            "max_position_embeddings": 77,
            "eos_token_id": vocab["<|endoftext|>"],
        },
        "vision_config": dict(vision or TINY_VISION),
    }
    (folder / "config.json").write_text(json.dumps(config))
    mx.random.seed(seed)
    model = CLIPModel(CLIPConfig.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": MLX_FORMAT})
    return folder
