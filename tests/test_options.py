import pytest

from atbsn.archs import build_arch
from atbsn.errors import OptionsError
from atbsn.options import apply_overrides, load_options, load_yaml, validate

from conftest import tiny_options, write_options


def test_unknown_registry_type_lists_known_names_and_closest():
    with pytest.raises(OptionsError) as e:
        build_arch({"type": "N2NUnet"})
    msg = str(e.value)
    assert "did you mean 'N2NUNet'" in msg and "Known archs: ATBSN, ATBSNStudentA" in msg


def test_build_arch_returns_module_with_kwargs():
    net = build_arch({"type": "N2NUNet", "in_channels": 1, "out_channels": 1})
    assert sum(p.numel() for p in net.parameters()) == 1256689


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("name: x\nmodel: {type: Neighbor2Neighbor\nnetworks: []\n")
    with pytest.raises(OptionsError) as e:
        load_yaml(str(p))
    assert "bad.yml" in str(e.value) and "malformed YAML" in str(e.value) and "line" in str(e.value)


def test_unknown_nested_key_names_path_and_suggestion(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder)
    opt["datasets"]["train"]["bach_size"] = 4
    with pytest.raises(OptionsError) as e:
        validate(opt, "my.yml")
    msg = str(e.value)
    assert msg.startswith("my.yml:") and "'datasets.train.bach_size'" in msg and "did you mean 'batch_size'" in msg


def test_unknown_top_level_and_network_keys(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder)
    opt["trian"] = {}
    with pytest.raises(OptionsError, match="unknown key 'trian'; did you mean 'train'"):
        validate(opt)
    opt = tiny_options(tmp_path, image_folder)
    opt["networks"]["net"]["n_features"] = 4
    with pytest.raises(OptionsError, match="'networks.net.n_features'; did you mean 'n_feature'"):
        validate(opt)


def test_wrong_type_and_missing_required(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder)
    opt["train"]["total_iter"] = "many"
    with pytest.raises(OptionsError, match="'train.total_iter' must be int | null, got 'many'"):
        validate(opt)
    opt = tiny_options(tmp_path, image_folder)
    del opt["networks"]
    with pytest.raises(OptionsError, match="missing required key 'networks'"):
        validate(opt)
    opt = tiny_options(tmp_path, image_folder)
    del opt["datasets"]["train"]["noise"]
    with pytest.raises(OptionsError, match="missing required key 'datasets.train.noise'"):
        validate(opt)


def test_overrides_are_yaml_scalars_never_evaluated(tmp_path, image_folder):
    opt = tiny_options(tmp_path, image_folder)
    out = apply_overrides(opt, ["train.total_iter=2000", "datasets.train.batch_size=4", "train.optimizer.lr=3e-4",
                                "name=__import__('os').getcwd()", "val.metrics=[n2n_official, basicsr_y]"])
    assert out["train"]["total_iter"] == 2000 and out["datasets"]["train"]["batch_size"] == 4
    assert out["train"]["optimizer"]["lr"] == 3e-4
    assert out["name"] == "__import__('os').getcwd()"
    assert out["val"]["metrics"] == ["n2n_official", "basicsr_y"]
    with pytest.raises(OptionsError, match="expected KEY=VALUE"):
        apply_overrides(opt, ["train.total_iter"])


def test_base_inheritance_and_defaults(tmp_path, image_folder):
    base = tiny_options(tmp_path, image_folder)
    write_options(tmp_path / "base.yml", base)
    (tmp_path / "child.yml").write_text("_base_: base.yml\nname: child\ntrain: {total_iter: 9}\n")
    opt = load_options(str(tmp_path / "child.yml"), ["seed=7"])
    assert opt["name"] == "child" and opt["train"]["total_iter"] == 9 and opt["seed"] == 7
    assert opt["train"]["optimizer"]["lr"] == 1e-3  # inherited
    assert opt["train"]["grad_clip"] is None and opt["val"]["padding"]["mode"] == "reflect"  # defaults


def test_all_shipped_configs_validate():
    import glob
    import os

    from conftest import ROOT

    files = [f for f in glob.glob(os.path.join(ROOT, "options", "*", "*.yml")) if not os.path.basename(f).startswith("_")]
    assert len(files) >= 6
    for f in files:
        load_options(f)
