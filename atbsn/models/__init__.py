"""Training methods. ``build_model(opt)`` builds the networks and the method from options."""
from __future__ import annotations

from ..registry import Registry
from .base_model import DenoisingModel, Progress, pad_to_multiple
from .atbsn import ATBSNDistillation, ATBSNModel
from .cbsn import CBSNModel
from .dbsn import DBSNDistillation, DBSNModel
from .neighbor2neighbor import Neighbor2Neighbor

MODEL_REGISTRY = Registry("model")
for _cls in (Neighbor2Neighbor, ATBSNModel, ATBSNDistillation, CBSNModel, DBSNModel, DBSNDistillation):
    MODEL_REGISTRY.register(_cls)


def build_model(opt: dict) -> DenoisingModel:
    from ..archs import build_arch

    networks = {role: build_arch(cfg, where=f"networks.{role}") for role, cfg in opt["networks"].items()}
    return MODEL_REGISTRY.build(opt["model"], where="model", networks=networks)


__all__ = ["MODEL_REGISTRY", "build_model", "DenoisingModel", "Progress", "pad_to_multiple", "Neighbor2Neighbor", "ATBSNModel",
           "ATBSNDistillation", "CBSNModel", "DBSNModel",
           "DBSNDistillation"]
