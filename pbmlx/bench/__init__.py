"""``pbmlx bench``: how long an edit takes here, stage by stage, against peers and the limit.

- :mod:`pbmlx.bench.runner` -- the plan and the timed runs (generative edit per variant and
  size, adjust engine against PIL, judge with and without CLIP);
- :mod:`pbmlx.bench.models` -- the editors timed: full-size networks with random weights (no
  download), or a given model, as float32 / float16 / 8-bit / 4-bit;
- :mod:`pbmlx.bench.flops` -- FLOPs per stage counted from the model configs;
- :mod:`pbmlx.bench.peak` -- the device's peak FLOP/s (Apple GPU figures, or a measured GEMM);
- :mod:`pbmlx.bench.memory` -- peak memory per stage;
- :mod:`pbmlx.bench.compare` -- the same edit through diffusers (PyTorch) and Core ML;
- :mod:`pbmlx.bench.report` -- the terminal tables, ``--json`` and ``--report DIR``;
- :mod:`pbmlx.bench.command` -- the command line.

Nothing here imports torch unless ``--compare diffusers`` asks for it.
"""
