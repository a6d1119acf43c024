"""pbmlx.train: fine-tuning the InstructPix2Pix editor on Pico-Banana-400K in MLX.

- :mod:`pbmlx.train.objective` -- the losses: InstructPix2Pix noise prediction with
  conditioning dropout, and Diffusion-DPO on preference pairs;
- :mod:`pbmlx.train.data` -- records -> pixels -> cached latents and text states;
- :mod:`pbmlx.train.loop` -- the run: data order, gradient accumulation and checkpointing,
  LoRA (mlx-lm's ``LoRALinear``), data-parallel averaging (``mx.distributed``), resumable
  checkpoints, saving a ``pbmlx convert`` folder;
- :mod:`pbmlx.train.command` -- ``pbmlx train``.

Needs the ``train`` extra (mlx-lm); imported only by the ``train`` command.
"""
