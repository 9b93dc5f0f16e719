"""ONNX export (scripts/export_onnx.py, atbsn/deploy.py) and onnxruntime parity, for every inference arch."""
import os

import numpy as np
import pytest
import torch

from atbsn.archs import ATBSN, CBSN, ATBSNStudentA, ATBSNStudentB, ATBSNStudentC, N2NUNet
from atbsn.errors import OptionsError
from atbsn.models import ATBSNDistillation, ATBSNModel, CBSNModel, Neighbor2Neighbor

from conftest import ROOT, run_cli, student_a_options, write_options

ort = pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (pip install -e .[onnx])")
pytest.importorskip("onnx")


def _seeded(build):
    torch.manual_seed(0)
    model = build()
    model.train(False)
    return model


MODELS = {
    "N2N U-Net": lambda: Neighbor2Neighbor({"net": N2NUNet(n_feature=8)}),
    "AT-BSN student A": lambda: ATBSNDistillation({"teacher": ATBSN(mid_channels=8), "student": ATBSNStudentA()}),
    "AT-BSN student B": lambda: ATBSNDistillation({"teacher": ATBSN(mid_channels=8), "student": ATBSNStudentB()}),
    "AT-BSN student C": lambda: ATBSNDistillation({"teacher": ATBSN(mid_channels=8),
                                                   "student": ATBSNStudentC(mid_channels=8)}),
    "AT-BSN teacher, k = 3, centred": lambda: ATBSNModel({"net": ATBSN(mid_channels=8)}, valid_hole_size=3,
                                                          centering="input_mean"),
    "C-BSN": lambda: CBSNModel({"net": CBSN(width=16, num_modules=2)}),
    "D-BSN student (MWCNN)": None,  # built below: it needs D-BSN's three stage-1 networks beside it
}


def _dbsn_distillation():
    from atbsn.options import load_options
    from atbsn.models import build_model

    opt = load_options(os.path.join(ROOT, "options/train/distill_dbsn_gray_awgn25.yml"),
                       ["networks.student.widths=[8,8,8]", "networks.student.layers=1", "path.pretrain_network=null"])
    return build_model(opt)


MODELS["D-BSN student (MWCNN)"] = _dbsn_distillation


@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_pytorch_on_sizes_off_the_multiple(tmp_path, name):
    from atbsn.deploy import OnnxModel, export_onnx, read_metadata

    model = _seeded(MODELS[name])
    channels = int(getattr(model.networks[model.inference_role], "in_channels", 3))
    path = str(tmp_path / "net.onnx")
    meta = export_onnx(model, {"name": name}, path, training_revision="abc123")
    onnx_model = OnnxModel(path)
    g = torch.Generator().manual_seed(1)
    for h, w in ((45, 71), (77, 50), (33, 33)):  # not multiples of 8 or 32, non-square: dynamic shapes
        x = torch.rand(1, channels, h, w, generator=g)
        with torch.no_grad():
            ref = model.denoise(x)
        out = onnx_model.denoise(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-4, (name, h, w, float((out - ref).abs().max()))
    back = read_metadata(path)
    assert back["arch"] == type(model.networks[model.inference_role]).__name__ == meta["arch"]
    assert back["training_revision"] == "abc123" and back["value_range"] == "0,1"
    assert int(back["input_multiple"]) == model.input_multiple() and len(back["options_sha256"]) == 16


def test_d_bsn_posterior_is_refused_with_its_reason(tmp_path):
    from atbsn.deploy import export_onnx
    from atbsn.options import load_options
    from atbsn.models import build_model

    opt = load_options(os.path.join(ROOT, "options/train/train_dbsn_gray_awgn25.yml"), ["path.pretrain_network=null"])
    model = build_model(opt)
    with pytest.raises(OptionsError, match="posterior .* not exported; export its distilled MWCNN student"):
        export_onnx(model, opt, str(tmp_path / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


def test_onnxruntime_missing_is_one_clear_error(monkeypatch, tmp_path):
    import builtins

    from atbsn.deploy import OnnxModel

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__",
                        lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n)) if n == "onnxruntime" else real(n, *a, **k))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(OptionsError, match="pip install onnx onnxruntime"):
        OnnxModel(str(tmp_path / "m.onnx"))


def test_export_script_then_test_py_and_the_python_api_on_the_onnx_file(tmp_path, image_folder):
    """test.py on the .onnx file writes the PNGs it writes from the .pth (within 1 level), tiled
    too, with the adaptive strength; Denoiser.from_onnx gives the same arrays."""
    from atbsn.inference import Denoiser
    from atbsn.utils.image import read_image

    opt = student_a_options(tmp_path, image_folder, "deploy")
    opt["val"]["strength"] = {"mode": "adaptive"}
    opt_path = write_options(tmp_path / "d.yml", opt)
    code, out, err = run_cli("scripts/export_onnx.py", "-opt", opt_path, "--output", str(tmp_path / "s.onnx"))
    assert code == 0 and "wrote" in out and "ATBSNStudentA" in out, err
    runs = {}
    for label, extra in (("pth", []), ("onnx", ["--set", f"path.pretrain_network={tmp_path / 's.onnx'}"]),
                         ("onnx_tiled", ["--set", f"path.pretrain_network={tmp_path / 's.onnx'}", "val.tile.size=32"])):
        code, out, err = run_cli("test.py", "-opt", opt_path, "--input", str(image_folder / "noisy"), "--output",
                                 str(tmp_path / label), *extra)
        assert code == 0, err
        runs[label] = {f: read_image(str(tmp_path / label / f))[0] for f in sorted(os.listdir(tmp_path / label))
                       if f.endswith(".png")}
        assert (tmp_path / label / "strength.csv").exists()
    for label in ("onnx", "onnx_tiled"):
        assert runs[label].keys() == runs["pth"].keys()
        for f in runs["pth"]:
            assert np.abs(runs[label][f] - runs["pth"][f]).max() <= 1 / 255 + 1e-6, (label, f)
    den = Denoiser.from_onnx(str(tmp_path / "s.onnx"), strength={"mode": "adaptive"})
    noisy = (read_image(str(image_folder / "noisy" / "img0.png"))[0] * 255).round().astype(np.uint8)
    assert np.abs(den(noisy).astype(int) - (runs["pth"]["img0.png"] * 255).round().astype(int)).max() <= 1
