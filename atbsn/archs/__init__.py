"""Network architectures. ``build_arch({'type': NAME, **kwargs})`` -> ``nn.Module``."""
from ..registry import Registry

ARCH_REGISTRY = Registry("arch")


def build_arch(cfg: dict, where: str = "network"):
    return ARCH_REGISTRY.build(cfg, where=where)


from .n2n_unet import N2NUNet  # noqa: E402

ARCH_REGISTRY.register(N2NUNet)

__all__ = ["ARCH_REGISTRY", "build_arch", "N2NUNet"]
