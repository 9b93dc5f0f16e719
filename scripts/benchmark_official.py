"""Side by side with the official code: ``scripts/benchmark.py --official PATH [PATH ...]``.

Each PATH is a checkout of one official repository, recognised by its layout:

    hnmizuho/AT-BSN              codes/models/modules/arch_atbsn.py
    TaoHuang2018/Neighbor2Neighbor  arch_unet.py (+ the sub-sampler functions of train.py)
    XHWXD/DBSN                   dbsn_color/net/backbone_net.py, dbsn_gray/net/mwcnn_gray.py

The official files are imported from PATH for the measurement only; nothing of them is copied
here. Both sides get the same weights (the official state dicts load into ours as they are) and
the same inputs; their outputs (or loss values) are compared; their times are interleaved in one
process (official, ours, official, ours ...) so that both see the same machine state.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import os
import statistics
import sys
import time
import types
from typing import Callable, List, NamedTuple, Optional

REPOS = {  # name: the file that identifies a checkout
    "hnmizuho/AT-BSN": os.path.join("codes", "models", "modules", "arch_atbsn.py"),
    "TaoHuang2018/Neighbor2Neighbor": "arch_unet.py",
    "XHWXD/DBSN": os.path.join("dbsn_color", "net", "backbone_net.py"),
}


class Case(NamedTuple):
    title: str
    official: Callable[[], object]
    ours: Callable[[], object]
    compare: bool  # outputs (tensors, tuples of tensors or loss values) must agree


def identify(path: str) -> str:
    """The repository a checkout at ``path`` is, or an error naming what was looked for."""
    for repo, marker in REPOS.items():
        if os.path.isfile(os.path.join(path, marker)):
            return repo
    expected = "; ".join(f"{marker} ({repo})" for repo, marker in REPOS.items())
    sys.exit(f"--official: {path} is no known official checkout: none of {expected} found there")


def _load_file(name: str, file: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _package_root(root: str, packages: List[str]):
    """Import ``root``'s top-level packages (``net``, ``util`` ...) as the official scripts do, and
    forget them afterwards so that two checkouts with the same package names do not mix."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in packages}
    sys.path.insert(0, root)
    try:
        yield
    finally:
        sys.path.remove(root)
        for k in [k for k in sys.modules if k.split(".")[0] in packages]:
            del sys.modules[k]
        sys.modules.update(saved)


def _functions_from(file: str, names: List[str], namespace: dict) -> dict:
    """Execute only the named top-level function definitions of ``file`` (its module body parses
    arguments and imports torchvision, which the measurement does not need)."""
    tree = ast.parse(open(file).read(), file)
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {d.name for d in defs}
    if missing:
        sys.exit(f"--official: {file} lacks {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=defs, type_ignores=[]), file, "exec"), namespace)  # noqa: S102 (the official file)
    return namespace


def _no_grad(fn):
    def run():
        import torch

        with torch.no_grad():
            return fn()
    return run


def _adam_step(params, loss_fn):
    import torch

    opt = torch.optim.Adam([p for p in params if p.requires_grad], 1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def atbsn_cases(path: str, args) -> List[Case]:
    import torch
    import torch.nn.functional as F

    from atbsn.archs import ATBSN, ATBSNStudentC
    from atbsn.models import ATBSNDistillation, Progress

    official = _load_file("official_arch_atbsn", os.path.join(path, REPOS["hnmizuho/AT-BSN"]))
    torch.manual_seed(0)
    theirs_t, theirs_s = official.ATBSN(), official.N_BSN()
    ours_t, ours_s = ATBSN(), ATBSNStudentC()
    ours_t.load_state_dict(theirs_t.state_dict())  # the official keys load as they are
    ours_s.load_state_dict(theirs_s.state_dict())
    x = torch.rand(args.batch, 3, args.size, args.size) * 255
    crops = torch.rand(args.train_batch, 3, args.train_size, args.train_size) * 255

    def teacher_step(net):
        return _adam_step(net.parameters(), lambda: F.l1_loss(net(crops, hole_size=9), crops))

    # Distillation (official atbsn_d_model.optimize_parameters): the frozen teacher at k = 0, 1, 3,
    # 5, 7, 9, 11 on the batch, student C trained on the sum of its L1 distances to each target.
    hole_sizes = [0, 1, 3, 5, 7, 9, 11]
    batch = torch.rand(args.distill_batch, 3, args.distill_size, args.distill_size)
    double = official.DoubleNet()
    torch.manual_seed(1)
    student = ATBSNStudentC()
    double.nbsn.load_state_dict(student.state_dict())
    double.bsn.load_state_dict(theirs_t.state_dict())
    distill = ATBSNDistillation({"teacher": ATBSN(), "student": student}, hole_sizes=hole_sizes,
                                init_student_from_teacher=False)
    distill.networks["teacher"].load_state_dict(theirs_t.state_dict())
    distill.train(True)
    progress = Progress(0, 1, 0, 1)

    def official_distill_loss():
        pred, targets = double(batch * 255, hole_size=hole_sizes, mode="train")
        return sum(F.l1_loss(pred, t.detach()) for t in targets)

    return [
        Case(f"teacher forward, {args.size}² x{args.batch}", _no_grad(lambda: theirs_t(x, 3)),
             _no_grad(lambda: ours_t(x, hole_size=3)), True),
        Case(f"teacher train step, {args.train_batch}x{args.train_size}², k = 9", teacher_step(theirs_t),
             teacher_step(ours_t), False),
        Case(f"distillation step, {args.distill_batch}x{args.distill_size}², 7 hole sizes, student C",
             _adam_step(double.nbsn.parameters(), official_distill_loss),
             _adam_step(student.parameters(), lambda: distill.training_step({"noisy": batch}, progress)["loss"]),
             True),
        Case(f"student C forward, {args.size}² x{args.batch}", _no_grad(lambda: theirs_s(x)), _no_grad(lambda: ours_s(x)),
             True),
    ]


def n2n_cases(path: str, args) -> List[Case]:
    import torch

    from atbsn.archs import N2NUNet
    from atbsn.models import Neighbor2Neighbor, Progress

    official = _load_file("official_arch_unet", os.path.join(path, "arch_unet.py"))
    sampler = _functions_from(os.path.join(path, "train.py"),
                              ["space_to_depth", "generate_mask_pair", "generate_subimages"],
                              {"torch": torch, "get_generator": lambda: None})
    generator = torch.Generator().manual_seed(0)
    sampler["get_generator"] = lambda: generator  # the official one is a CUDA generator
    torch.manual_seed(0)
    theirs = official.UNet(in_nc=3, out_nc=3, n_feature=48)
    for m in theirs.modules():  # its deconvs pass False as output_padding, which torch >= 2.x rejects; 0 is the same
        if isinstance(m, torch.nn.ConvTranspose2d):
            m.output_padding = tuple(int(v) for v in m.output_padding)
    ours_net = N2NUNet()
    ours_net.load_state_dict(theirs.state_dict())
    model = Neighbor2Neighbor({"net": ours_net})
    model.train(True)
    x = torch.rand(args.batch, 3, args.size, args.size)
    noisy = torch.rand(args.n2n_batch, 3, args.n2n_size, args.n2n_size)
    progress = Progress(50, 100, 50, 1)  # half way: Lambda = 0.5 * increase_ratio (2) = 1

    def official_loss():  # official train.py's iteration, as written there
        mask1, mask2 = sampler["generate_mask_pair"](noisy)
        sub1 = sampler["generate_subimages"](noisy, mask1)
        sub2 = sampler["generate_subimages"](noisy, mask2)
        with torch.no_grad():
            denoised = theirs(noisy)
        den1 = sampler["generate_subimages"](denoised, mask1)
        den2 = sampler["generate_subimages"](denoised, mask2)
        diff = theirs(sub1) - sub2
        return torch.mean(diff ** 2) + 1.0 * torch.mean((diff - (den1 - den2)) ** 2)

    return [
        Case(f"UNet forward, {args.size}² x{args.batch}", _no_grad(lambda: theirs(x)), _no_grad(lambda: ours_net(x)),
             True),
        Case(f"training step, {args.n2n_batch}x{args.n2n_size}² (sampler, 2 passes, both losses)",
             _adam_step(theirs.parameters(), official_loss),
             _adam_step(ours_net.parameters(), lambda: model.training_step({"noisy": noisy}, progress)["loss"]), False),
    ]


def dbsn_cases(path: str, args) -> List[Case]:
    import torch
    import torch.nn.functional as F

    from atbsn.archs import DBSN, MWCNN, DBSNSigmaMu, DBSNSigmaN

    try:  # the official util/utils.py imports a function that scikit-image removed in 0.19
        import skimage.measure.simple_metrics  # noqa: F401
    except ImportError:
        stub = types.ModuleType("skimage.measure.simple_metrics")
        stub.compare_psnr = None  # unused by the networks
        sys.modules["skimage.measure.simple_metrics"] = stub
    with _package_root(os.path.join(path, "dbsn_color"), ["net", "util"]):
        backbone = importlib.import_module("net.backbone_net")
        sigma = importlib.import_module("net.sigma_net")
        torch.manual_seed(0)
        theirs = backbone.DBSN_Model(3, 3, 96, "Mask", True, 3, 8, 5, 8, "Relu")
        theirs_mu, theirs_n = sigma.Sigma_mu_Net(96, 3, 32, 3, 1, True), sigma.Sigma_n_Net(3, 3, 32, 5, 1, True)
    ours, ours_mu, ours_n = DBSN(3), DBSNSigmaMu(96, 3), DBSNSigmaN(3, 3, variant="color")
    for a, b in ((theirs, ours), (theirs_mu, ours_mu), (theirs_n, ours_n)):
        b.load_state_dict(a.state_dict())
    mwcnn_file = os.path.join(path, "dbsn_gray", "net", "mwcnn_gray.py")
    theirs_mw = _load_file("official_mwcnn_gray", mwcnn_file).MWCNN()
    ours_mw = MWCNN()
    ours_mw.load_state_dict(theirs_mw.state_dict())
    x = torch.rand(args.batch, 3, args.size, args.size)
    gray = torch.rand(args.batch, 1, args.size, args.size)
    crops = torch.rand(args.train_batch, 3, args.train_size, args.train_size)

    def heads(net, mu_net, n_net):  # mu and its variance from the backbone's feature, and the noise level
        def run():
            mu, f = net(x)
            return mu, mu_net(f), n_net(x)
        return _no_grad(run)

    def mu_step(net):  # the mu pre-training step: L2 between the prior mean and the noisy image
        return _adam_step(net.parameters(), lambda: F.mse_loss(net(crops)[0], crops))

    return [
        Case(f"D-BSN colour forward (backbone, sigma_mu, sigma_n), {args.size}² x{args.batch}",
             heads(theirs, theirs_mu, theirs_n), heads(ours, ours_mu, ours_n), True),
        Case(f"D-BSN mu pre-training step, {args.train_batch}x{args.train_size}²", mu_step(theirs), mu_step(ours), False),
        Case(f"MWCNN (gray student) forward, {args.size}² x{args.batch}", _no_grad(lambda: theirs_mw(gray)),
             _no_grad(lambda: ours_mw(gray)), True),
    ]


BUILDERS = {"hnmizuho/AT-BSN": atbsn_cases, "TaoHuang2018/Neighbor2Neighbor": n2n_cases, "XHWXD/DBSN": dbsn_cases}


def _max_relative_difference(a, b) -> Optional[float]:
    import torch

    if isinstance(a, (tuple, list)):
        return max(_max_relative_difference(p, q) for p, q in zip(a, b))
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def measure(paths: List[str], args) -> List[dict]:
    """One row per case of every checkout: median times, their ratio and the output difference."""
    rows = []
    for path in paths:
        repo = identify(path)
        for case in BUILDERS[repo](path, args):
            diff = _max_relative_difference(case.official(), case.ours()) if case.compare else None
            for _ in range(args.warmup):
                case.official(), case.ours()
            t_theirs, t_ours = [], []
            for _ in range(args.runs):
                for fn, store in ((case.official, t_theirs), (case.ours, t_ours)):
                    t = time.perf_counter()
                    fn()
                    store.append(time.perf_counter() - t)
            row = {"repo": repo, "case": case.title, "official_ms": statistics.median(t_theirs) * 1e3,
                   "ours_ms": statistics.median(t_ours) * 1e3, "max_rel_diff": diff}
            row["ratio"] = row["ours_ms"] / row["official_ms"]
            rows.append(row)
            print(f"official {repo}, {case.title}: ours/official {row['ratio']:.2f}", flush=True)
    return rows


def markdown(rows: List[dict]) -> List[str]:
    lines = ["| official code | case | official ms | ours ms | ours / official | max output difference (relative) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        d = "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        lines.append(f"| {r['repo']} | {r['case']} | {r['official_ms']:.1f} | {r['ours_ms']:.1f} | {r['ratio']:.2f} | {d} |")
    return lines
