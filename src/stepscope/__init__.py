"""stepscope: record what image-to-video diffusion transformers do at every denoising step."""

__version__ = "0.1.0"
