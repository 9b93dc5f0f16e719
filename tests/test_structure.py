"""The package's shape: imports go one way, and the shared machinery names no method or dataset."""
import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "atbsn")


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                yield rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def module_level_imports(name):
    """atbsn modules imported when ``name`` is imported (module body only: imports inside functions
    run on use and are how heavy or optional parts stay lazy)."""
    path = os.path.join(ROOT, *name.split("."))
    is_pkg = os.path.isdir(path)
    tree = ast.parse(open(os.path.join(path, "__init__.py") if is_pkg else path + ".py").read())
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("atbsn"):
                    found.add(target)
                    for alias in node.names:  # `from . import submodule`
                        if os.path.exists(os.path.join(ROOT, *target.split("."), alias.name + ".py")):
                            found.add(f"{target}.{alias.name}")
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("atbsn"))
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(tree.body)
    # importing a.b.c runs a/__init__ and a/b/__init__ first, except packages already importing `name`
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    closed = set()
    for t in found:
        parts = t.split(".")
        closed.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return closed - own


def test_no_import_cycle_among_module_level_imports():
    graph = {m: module_level_imports(m) for m in modules()}
    state, stack = {}, []

    def walk(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                walk(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m)


def test_every_submodule_imports_first_in_a_fresh_interpreter():
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, PYTHONPATH=ROOT)

    def first_import(m):  # one interpreter per module; two at a time (an import is mostly one core)
        p = subprocess.run([sys.executable, "-c", "import " + m], cwd=ROOT, capture_output=True, text=True, env=env)
        return (m, (p.stderr.strip().splitlines() or ["rc %d" % p.returncode])[-1]) if p.returncode else None

    names = list(modules())
    with ThreadPoolExecutor(2) as pool:
        bad = [r for r in pool.map(first_import, names) if r]
    assert len(names) > 40 and not bad, bad


def test_shared_machinery_names_no_method_or_dataset_class():
    from atbsn.archs import ARCH_REGISTRY
    from atbsn.data import DATASET_REGISTRY
    from atbsn.models import MODEL_REGISTRY

    names = MODEL_REGISTRY.names() + DATASET_REGISTRY.names() + ARCH_REGISTRY.names()
    shared = [os.path.join("atbsn", "train", f) for f in os.listdir(os.path.join(PACKAGE, "train")) if f.endswith(".py")]
    shared += [os.path.join("atbsn", f) for f in ("evaluation.py", "inference.py", "cli.py")]
    found = [(f, n) for f in shared for n in names
             if re.search(rf"\b{n}\b", open(os.path.join(ROOT, f)).read())]
    assert not found, found


def test_model_losses_from_yaml_change_the_objective():
    import torch

    from atbsn.errors import OptionsError
    from atbsn.models import build_model
    from atbsn.models.base_model import Progress
    from atbsn.options import validate

    def loss_of(losses):
        opt = validate({"name": "l", "model": {"type": "ATBSNModel", **({"losses": losses} if losses else {})},
                        "networks": {"net": {"type": "ATBSN", "mid_channels": 8}}})
        torch.manual_seed(0)
        model = build_model(opt)
        model.train(True)
        batch = {"noisy": torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
        return model.training_step(batch, Progress(0, 1, 0, 1))["loss"].item()

    l1 = loss_of(None)
    assert loss_of({"rec": {"type": "L1Loss"}}) == l1  # the default is the paper's L1
    charbonnier = loss_of({"rec": {"type": "CharbonnierLoss", "eps": 1.0}})
    assert charbonnier != l1 and charbonnier > l1  # sqrt(d^2 + 1) > |d|
    assert loss_of({"rec": {"type": "L1Loss", "weight": 2.0}}) == pytest.approx(2 * l1)
    with pytest.raises(OptionsError, match="ATBSNModel has no term 'recon'; its terms: rec"):
        loss_of({"recon": {"type": "L1Loss"}})
    with pytest.raises(OptionsError, match="model.losses.rec.type: unknown loss 'L3Loss'"):
        loss_of({"rec": {"type": "L3Loss"}})


def test_every_method_names_its_pixel_terms():
    from atbsn.models import MODEL_REGISTRY

    terms = {name: sorted(MODEL_REGISTRY.get(name).default_losses) for name in MODEL_REGISTRY.names()}
    assert terms == {"ATBSNDistillation": ["distill"], "ATBSNModel": ["rec"], "CBSNModel": ["blind", "invariance", "self"],
                     "DBSNDistillation": ["pseudo", "synthetic"], "DBSNModel": [], "Neighbor2Neighbor": ["rec", "reg"]}
