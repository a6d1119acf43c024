"""The diffusion stage: InstructPix2Pix sampling in MLX (schedulers here; the pipeline beside them)."""

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

__all__ = [
    "DEFAULT_SCHEDULER",
    "SCHEDULERS",
    "DDIMScheduler",
    "EulerAncestralScheduler",
    "EulerScheduler",
    "Scheduler",
    "SchedulerConfig",
    "make_scheduler",
]
