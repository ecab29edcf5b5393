"""diffusers pipelines over the seedkit transformer, causal VAE and text encoders (one file per task)."""

from seedkit.pipelines.base import (
    OUTPUT_TYPES,
    SeedkitPipelineBase,
    SeedkitVideoPipelineOutput,
    assemble_components,
    build_components,
)
from seedkit.pipelines.image_to_video import SeedkitImageToVideoPipeline
from seedkit.pipelines.text_to_image import SeedkitTextToImagePipeline
from seedkit.pipelines.text_to_video import SeedkitTextToVideoPipeline

PIPELINES_BY_TASK = {
    "t2i": SeedkitTextToImagePipeline,
    "t2v": SeedkitTextToVideoPipeline,
    "i2v": SeedkitImageToVideoPipeline,
}

__all__ = [
    "OUTPUT_TYPES",
    "PIPELINES_BY_TASK",
    "SeedkitPipelineBase",
    "SeedkitVideoPipelineOutput",
    "SeedkitTextToImagePipeline",
    "SeedkitTextToVideoPipeline",
    "SeedkitImageToVideoPipeline",
    "assemble_components",
    "build_components",
]
