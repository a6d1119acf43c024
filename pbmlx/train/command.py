"""``pbmlx train DATA --model BASE --out OUT``: the command around :func:`pbmlx.train.loop.train`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pbmlx.errors import PbmlxError


def main(args: argparse.Namespace) -> int:
    try:
        import mlx_lm  # noqa: F401
    except ImportError:
        raise PbmlxError(
            'pbmlx train needs mlx-lm (LoRA layers and schedules): pip install "pbmlx[train]".'
        ) from None
    from pbmlx.train.loop import TrainConfig, train

    cfg = TrainConfig(
        data=Path(args.data),
        model=args.model,
        out=Path(args.out),
        resolution=args.resolution,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        warmup=args.warmup,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        grad_accum=args.grad_accum,
        grad_checkpoint=args.grad_checkpoint,
        lora_rank=args.lora_rank,
        lora_scale=args.lora_scale,
        lora_conv=args.lora_conv,
        dropout=args.conditioning_dropout,
        seed=args.seed,
        cache=Path(args.cache) if args.cache else None,
        work=Path(args.work) if args.work else None,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        save_adapter=args.save_adapter,
        dpo=args.dpo,
        dpo_beta=args.dpo_beta,
        sources=Path(args.sources) if args.sources else None,
        edit_types=args.edit_types,
        groups=args.groups,
        instruction=args.instruction,
        split=None if args.split == "all" else args.split,
        limit=args.limit,
        progress=not args.json,
    )
    result = train(cfg)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"{result.output}: {result.steps} steps, loss {result.loss_first:.4f} -> "
            f"{result.loss_last:.4f}, {result.images_per_second:.2f} images/s"
        )
    return 0


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "train",
        parents=parents,
        help="fine-tune the InstructPix2Pix editor on Pico-Banana-400K records",
        description=(
            "Fine-tune an InstructPix2Pix UNet in MLX on a Pico-Banana-400K folder (sft.jsonl, "
            "or preference.jsonl with --dpo) and write a pbmlx model folder that `pbmlx edit "
            "--model` and `pbmlx export-coreml` load. Run several processes with `mlx.launch` "
            "for data-parallel training."
        ),
    )
    p.add_argument("data", help="the dataset folder (sft.jsonl, preference.jsonl, images/)")
    p.add_argument("--model", required=True, help="base model: folder or hub id")
    p.add_argument("--out", required=True, help="the new model folder (must not exist)")
    p.add_argument("--resolution", type=int, default=256, help="training size (default 256)")
    p.add_argument("--batch-size", type=int, default=1, help="examples per process per step")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW's (default 0.01)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per update")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute activations")
    p.add_argument("--lora-rank", type=int, help="train LoRA layers of this rank instead")
    p.add_argument("--lora-scale", type=float, default=1.0, help="LoRA output scale (1.0)")
    p.add_argument("--lora-conv", action="store_true", help="LoRA on proj_in/proj_out too")
    p.add_argument("--save-adapter", action="store_true", help="also keep the LoRA adapter")
    p.add_argument("--conditioning-dropout", type=float, default=0.05,
                   help="probability of each of: text dropped, image dropped, both (0.05)")  # fmt: skip
    p.add_argument("--dpo", action="store_true", help="Diffusion-DPO on preference.jsonl")
    p.add_argument("--dpo-beta", type=float, default=5000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="folder caching latents and text states")
    p.add_argument("--work", help="checkpoints folder (default OUT.train)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--sources", help="Open Images folder for the source photos")
    p.add_argument("--edit-types", nargs="+", help="only these edit types")
    p.add_argument("--groups", nargs="+", help="only these edit-type groups")
    p.add_argument("--instruction", choices=("summarized", "text", "both"), default="summarized")
    p.add_argument("--split", choices=("train", "val", "all"), default="train")
    p.add_argument("--limit", type=int, help="use at most N records")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.set_defaults(func=main)
