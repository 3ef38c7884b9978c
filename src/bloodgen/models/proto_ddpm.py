"""Prototype-guided diffusion (IMPROVE, Shandilya et al.): the class condition is a frozen class prototype.

Everything is the class-conditional `DDPM` (same U-Net, schedule, losses, samplers, guidance) except how
the class enters. `class_embedding` picks one of two arms that differ in nothing else:

  prototypes  the class's prototype from `bloodgen prototypes learn` (with K prototypes per class, their
              mean), frozen: a persistent buffer, so no optimiser or EMA step can change it;
  learned     an `nn.Embedding` of the same dimension, randomly initialised (N(0, 1)) and trained: the
              paper's baseline.

As in the paper the class vector is concatenated with the time embedding: the sinusoidal embedding of t
and the class vector, side by side, go through the time MLP, whose output conditions every ResNet block.
diffusers' `UNet2DModel` can only add a class embedding to its time embedding, so `ConcatConditionedUNet`
computes the joint embedding itself and hands it to the U-Net through its "identity" class-embedding
input, with the U-Net's own time MLP replaced by zeros (so t is not counted twice).

Classifier-free guidance needs a "no class" vector: a learned null vector (initialised at zero) in both
arms, so the arms stay alike there too.

A trained model carries its prototypes in its weights (the buffer is exported with the network), so
sampling or evaluating it never needs the prototypes file; only starting a training run does. `build()`
therefore reads the file when it exists and otherwise leaves zeros that `load_state_dict` overwrites;
the network refuses to run on zeros that were never filled (a training run whose file is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.models.embeddings import TimestepEmbedding
from torch import nn

from bloodgen.errors import UserError
from bloodgen.models.config import require
from bloodgen.models.ddpm import DDPM
from bloodgen.models.prototype_file import CLASS_EMBEDDINGS, LEARNED, PROTOTYPES, read_prototypes
from bloodgen.provenance import state_digest

PROTOTYPE_BUFFER = "prototypes"
class _NoTimeEmbedding(nn.Module):
    """Stands in for the U-Net's time MLP: the joint time-and-class embedding arrives as its class input."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return t_emb.new_zeros(t_emb.shape[0], self.dim)


class ConcatConditionedUNet(nn.Module):
    """A `UNet2DModel` conditioned on MLP([sinusoid(t); class vector]); label n_classes is the null class."""

    def __init__(self, unet: nn.Module, n_classes: int, class_dim: int, mode: str,
                 class_vectors: torch.Tensor | None, source: str = ""):
        super().__init__()
        self.unet, self.mode, self.source = unet, mode, source
        time_dim = unet.config.block_out_channels[0] * 4
        sinusoid_dim = unet.config.block_out_channels[0]
        unet.time_embedding = _NoTimeEmbedding(time_dim)
        self.embed = TimestepEmbedding(sinusoid_dim + class_dim, time_dim)
        self.null = nn.Parameter(torch.zeros(1, class_dim))
        if mode == LEARNED:
            self.classes = nn.Embedding(n_classes, class_dim)
            self.ready = True
        else:
            # Persistent (saved and exported) but not a parameter: nothing trains it, EMA copies it as is.
            filled = class_vectors is not None
            self.register_buffer(PROTOTYPE_BUFFER, class_vectors if filled else torch.zeros(n_classes, class_dim))
            self.ready = filled

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + PROTOTYPE_BUFFER in state_dict:
            self.ready = True

    def class_table(self) -> torch.Tensor:
        """(n_classes + 1, class_dim): the class vectors, then the null vector."""
        table = self.classes.weight if self.mode == LEARNED else getattr(self, PROTOTYPE_BUFFER)
        return torch.cat([table, self.null])

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.ready:
            raise UserError(f"prototypes file {self.source} (config key 'prototypes') not found; create it with "
                            f"`bloodgen prototypes learn`")
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        sinusoid = self.unet.time_proj(t).to(x.dtype)
        joint = self.embed(torch.cat([sinusoid, self.class_table()[labels].to(x.dtype)], dim=1))
        return self.unet(x, t, class_labels=joint).sample


class ProtoDDPM(DDPM):
    choices = {**DDPM.choices, "class_embedding": CLASS_EMBEDDINGS}

    def check(self) -> None:
        super().check()
        c = self.config
        require(c["conditional"], "conditional", "must be true: proto-ddpm conditions on classes", c)
        require(c["class_dim"] >= 1, "class_dim", "must be >= 1", c)
        require(not c["cond_mixup"], "cond_mixup", "is not available for proto-ddpm: its class vectors are frozen", c)

    def build(self) -> dict[str, nn.Module]:
        c = self.config
        vectors = self.class_vectors() if c["class_embedding"] == PROTOTYPES else None
        unet = self.unet(class_embed_type="identity")
        return {"unet": ConcatConditionedUNet(unet, self.n_classes, c["class_dim"], c["class_embedding"], vectors,
                                              source=c["prototypes"])}

    def class_vectors(self) -> torch.Tensor | None:
        """The frozen class vectors from the prototypes file, or None when the file is absent (see module doc).

        With K prototypes per class the class vector is their mean. The whole table is then scaled by one
        factor to unit root-mean-square, the scale of the learned arm's N(0, 1) initialisation, so the two
        arms start with class vectors of the same size; one global factor keeps the prototypes' geometry.
        """
        c = self.config
        if not c["prototypes"]:
            raise UserError("config key 'prototypes' is empty: give the file from `bloodgen prototypes learn` "
                            "(--set prototypes=PATH), or use --set class_embedding=learned")
        path = Path(c["prototypes"]).expanduser()
        if not path.exists():
            return None
        prototypes = read_prototypes(path)
        if prototypes.shape[0] != self.n_classes:
            raise UserError(f"{path} holds prototypes of {prototypes.shape[0]} classes; the data has {self.n_classes}")
        if prototypes.shape[2] != c["class_dim"]:
            raise UserError(f"{path} holds {prototypes.shape[2]}-dimensional prototypes but config key 'class_dim' "
                            f"is {c['class_dim']}; set class_dim={prototypes.shape[2]}")
        vectors = prototypes.float().mean(dim=1)
        return vectors / vectors.pow(2).mean().sqrt().clamp_min(1e-12)

    def denoise(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return unet(x, t, labels)

    def extras(self, network: nn.Module, data, out_dir: Path, seed: int) -> dict[str, Any]:
        """Which class vectors the run used: the file named in the config and a digest of the frozen buffer."""
        if self.config["class_embedding"] != PROTOTYPES:
            return {}
        return {"prototypes_file": self.config["prototypes"],
                "class_vectors_sha256": state_digest({PROTOTYPE_BUFFER: getattr(network, PROTOTYPE_BUFFER)})}
