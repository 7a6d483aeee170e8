"""Small-width versions of diffsynth components whose constructors fix their widths.

diffsynth's ``WanVideoVAE`` and ``WanImageEncoder`` take no width arguments, so a tiny twin
cannot be made from their constructors alone. These subclasses keep the classes, forward
code and state-dict layout of the originals and only swap in the same inner architectures
(``VideoVAE_``, ``XLMRobertaCLIP``) built with small widths.
"""

from __future__ import annotations

import torch
from diffsynth.models.wan_video_image_encoder import WanImageEncoder, XLMRobertaCLIP, _clip
from diffsynth.models.wan_video_vae import VideoVAE_, WanVideoVAE


class TinyWanVideoVAE(WanVideoVAE):
    def __init__(self, z_dim: int = 16, dim: int = 8):
        torch.nn.Module.__init__(self)
        # Same latent normalisation constants as the real VAE (they are not in the state dict).
        self.mean = torch.tensor(
            [
                -0.7571,
                -0.7089,
                -0.9113,
                0.1075,
                -0.1745,
                0.9653,
                -0.1517,
                1.5508,
                0.4134,
                -0.0715,
                0.5517,
                -0.3632,
                -0.1922,
                -0.9497,
                0.2503,
                -0.2921,
            ]
        )[:z_dim]
        self.std = torch.tensor(
            [
                2.8184,
                1.4541,
                2.3275,
                2.6558,
                1.2196,
                1.7708,
                2.6052,
                2.0743,
                3.2687,
                2.1526,
                2.8652,
                1.5579,
                1.6382,
                1.1253,
                2.8251,
                1.9160,
            ]
        )[:z_dim]
        self.scale = [self.mean, 1.0 / self.std]
        self.model = VideoVAE_(dim=dim, z_dim=z_dim).eval().requires_grad_(False)
        self.upsampling_factor = 8
        self.z_dim = z_dim


class TinyWanImageEncoder(WanImageEncoder):
    """CLIP ViT with the real output width (1280, which the DiT's img_emb expects) but 2 layers."""

    def __init__(self, image_size: int = 28, vision_layers: int = 2):
        torch.nn.Module.__init__(self)

        self.model, self.transforms = _clip(
            pretrained=False,
            pretrained_name="open-clip-xlm-roberta-large-vit-huge-14",
            model_cls=XLMRobertaCLIP,
            return_transforms=True,
            return_tokenizer=False,
            dtype=torch.float32,
            device="cpu",
            embed_dim=32,
            image_size=image_size,
            patch_size=14,
            vision_dim=1280,
            vision_mlp_ratio=1,
            vision_heads=16,
            vision_layers=vision_layers,
            vision_pool="token",
            activation="gelu",
            vocab_size=64,
            max_text_len=16,
            type_size=1,
            pad_id=1,
            text_dim=32,
            text_heads=2,
            text_layers=1,
            text_post_norm=True,
            text_dropout=0.0,
            attn_dropout=0.0,
            proj_dropout=0.0,
            embedding_dropout=0.0,
        )
