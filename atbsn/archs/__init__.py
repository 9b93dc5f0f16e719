"""Network architectures. ``build_arch({'type': NAME, **kwargs})`` -> ``nn.Module``."""
from ..registry import Registry

ARCH_REGISTRY = Registry("arch")


def build_arch(cfg: dict, where: str = "network"):
    return ARCH_REGISTRY.build(cfg, where=where)


from .atbsn import ATBSN  # noqa: E402
from .cbsn import CBSN  # noqa: E402
from .dbsn import DBSN, DBSNSigmaMu, DBSNSigmaN  # noqa: E402
from .mwcnn import MWCNN  # noqa: E402
from .n2n_unet import N2NUNet  # noqa: E402
from .students import ATBSNStudentA, ATBSNStudentB, ATBSNStudentC  # noqa: E402

for _cls in (N2NUNet, ATBSN, ATBSNStudentA, ATBSNStudentB, ATBSNStudentC, CBSN, DBSN, DBSNSigmaMu, DBSNSigmaN,
             MWCNN):
    ARCH_REGISTRY.register(_cls)

__all__ = ["ARCH_REGISTRY", "build_arch", "N2NUNet", "ATBSN", "ATBSNStudentA", "ATBSNStudentB", "ATBSNStudentC", "CBSN", "DBSN",
           "DBSNSigmaMu", "DBSNSigmaN", "MWCNN"]
