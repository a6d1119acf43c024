"""The diffusion stage: InstructPix2Pix sampling in MLX (schedulers and the sampler's settings
here; the pipeline beside them)."""

from pbmlx.diffuse.schedulers import (
    DEFAULT_SCHEDULER,
    SCHEDULERS,
    DDIMScheduler,
    EulerAncestralScheduler,
    EulerScheduler,
    Scheduler,
    SchedulerConfig,
    make_scheduler,
)
from pbmlx.diffuse.settings import SamplerSettings

__all__ = [
    "DEFAULT_SCHEDULER",
    "SCHEDULERS",
    "DDIMScheduler",
    "EulerAncestralScheduler",
    "EulerScheduler",
    "SamplerSettings",
    "Scheduler",
    "SchedulerConfig",
    "make_scheduler",
]
