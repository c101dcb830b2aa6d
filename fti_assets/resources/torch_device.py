"""Which device PyTorch trains on: CUDA when present (or asked for), the CPU otherwise."""

from __future__ import annotations

from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field


class TorchDeviceResource(ConfigurableResource):
    prefer: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="FTI_TORCH_DEVICE")

    def device(self) -> str:
        import torch

        if self.prefer == "cpu":
            return "cpu"
        if torch.cuda.is_available():
            return "cuda"
        if self.prefer == "cuda":
            raise RuntimeError("FTI_TORCH_DEVICE=cuda but torch sees no CUDA device")
        return "cpu"
