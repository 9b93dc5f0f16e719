"""D-BSN: the backbone and noise heads, posterior inference and the losses."""
from __future__ import annotations

from typing import Iterator

import torch

from .common import TOL_NET, Result, _load, rel_err

def _dbsn_state(folder: str, file: str) -> dict:
    from ..weights import extract_state_dict

    return extract_state_dict(_load(folder, file), "net", file)  # drops the official 'module.' prefix


def _dbsn_nets(folder: str, ref: dict, color: bool, bias: bool = False, sigma_n_file: str = None):
    from ..archs import DBSN, DBSNSigmaMu, DBSNSigmaN

    c = 3 if color else 1
    nets = {"net": DBSN(c), "sigma_mu": DBSNSigmaMu(96, 6 if color else 1, 32 if color else 16),
            "sigma_n": DBSNSigmaN(c, 6 if color else 1, 32 if color else 16)}
    for role, key in (("net", "backbone"), ("sigma_mu", "sigma_mu"), ("sigma_n", "sigma_n")):
        sd = _dbsn_state(folder, sigma_n_file if (role == "sigma_n" and sigma_n_file) else ref[f"weights_file_{key}"])
        if bias:
            sd.update(_dbsn_state(folder, ref[f"biaspert_file_{key}"]))
        nets[role].load_state_dict(sd, strict=True)
        nets[role].eval()
    return nets


def check_dbsn_weights(folder: str, file: str) -> Iterator[Result]:
    color = "_color_" in file
    ref = _load(folder, f"dbsn_{'color' if color else 'gray'}_vectors.pt")
    nets = _dbsn_nets(folder, ref, color, sigma_n_file=file if "randfinal" in file else None)
    role = "net" if "backbone" in file else ("sigma_mu" if "sigma_mu" in file else "sigma_n")
    key = {"net": "backbone"}.get(role, role)
    count = sum(p.numel() for p in nets[role].parameters())
    yield Result(file, f"'module.' prefix stripped, strict load, {ref[f'param_count_{key}']:,} parameters",
                 rel_err(count, ref[f"param_count_{key}"]), 0.0)


def check_dbsn_bias_perturbation(folder: str, file: str) -> Iterator[Result]:
    biases = _dbsn_state(folder, file)
    yield Result(file, f"{len(biases)} bias tensors, all '.bias' keys",
                 float(sum(not k.endswith(".bias") for k in biases)), 0.0)


def check_dbsn_vectors(folder: str, file: str) -> Iterator[Result]:
    from ..models.dbsn import gaussian_nll, image_covariance, noise_covariance, posterior_mean, prior_covariance

    ref = _load(folder, file)
    color = "_color_" in file
    noise = "mg" if color else "awgn"
    y = ref["input"]
    with torch.no_grad():
        nets = _dbsn_nets(folder, ref, color)
        mu, f = nets["net"](y)
        yield Result(file, "backbone_mu", rel_err(mu, ref["backbone_mu"]), TOL_NET)
        yield Result(file, "backbone_f", rel_err(f, ref["backbone_f"]), TOL_NET)
        raw_mu, raw_n = nets["sigma_mu"](ref["backbone_f"]), nets["sigma_n"](y)
        yield Result(file, "sigma_mu_out", rel_err(raw_mu, ref["sigma_mu_out"]), TOL_NET)
        yield Result(file, "sigma_n_out", rel_err(raw_n, ref["sigma_n_out"]), TOL_NET)
        biased = _dbsn_nets(folder, ref, color, bias=True)
        yield Result(file, "biaspert_backbone_mu", rel_err(biased["net"](y)[0], ref["biaspert_backbone_mu"]), TOL_NET)
        yield Result(file, "biaspert_sigma_mu_out_on_stored_f",
                     rel_err(biased["sigma_mu"](ref["backbone_f"]), ref["biaspert_sigma_mu_out_on_stored_f"]), TOL_NET)
        yield Result(file, "biaspert_sigma_n_out", rel_err(biased["sigma_n"](y), ref["biaspert_sigma_n_out"]), TOL_NET)
        mu, raw_mu, raw_n = ref["backbone_mu"], ref["sigma_mu_out"], ref["sigma_n_out"]
        cov_mu, cov_n = prior_covariance(raw_mu, noise), noise_covariance(raw_n, noise)
        if color:
            yield Result(file, "sigma_mu_matrix_image", rel_err(image_covariance(raw_mu)[:, 0, 0], ref["sigma_mu_matrix_image"]), TOL_NET)
            yield Result(file, "sigma_n_matrix_image", rel_err(image_covariance(raw_n)[:, 0, 0], ref["sigma_n_matrix_image"]), TOL_NET)
            for name, gamma in (("map_out_gamma1", 1.0), ("map_out_gamma0p9", 0.9)):
                yield Result(file, name, rel_err(posterior_mean(y, mu, cov_mu, cov_n, gamma), ref[name]), TOL_NET)
        else:
            yield Result(file, "sigma_mu (= s^2)", rel_err(cov_mu, ref["sigma_mu"]), TOL_NET)
            yield Result(file, "sigma_n_awgn_mean", rel_err(cov_n, ref["sigma_n_awgn_mean"]), TOL_NET)
            yield Result(file, "map_out_train_val", rel_err(posterior_mean(y, mu, cov_mu, cov_n), ref["map_out_train_val"]), TOL_NET)
            per_pixel = noise_covariance(raw_n, noise, per_pixel_awgn=True)
            for name, gamma in (("map_out_test_gamma1", 1.0), ("map_out_test_gamma0p9", 0.9)):
                out = posterior_mean(y, mu, cov_mu, per_pixel, gamma, gamma_on_prior=True)
                yield Result(file, f"{name} (official gray test: per-pixel sigma_n, gamma on mu)", rel_err(out, ref[name]), TOL_NET)
        for loss in ("map", "dbsn"):
            value, hit, t1_max = gaussian_nll(y, mu, cov_mu, cov_n, loss)
            key = f"pipeline_{'MAPLoss' if loss == 'map' else 'DBSNLoss'}"
            yield Result(file, key, rel_err(value.item(), ref[key]), TOL_NET)
            if loss == "map":
                yield Result(file, "pipeline_MAPLoss_div_2B", rel_err(value.item() / 2, ref["pipeline_MAPLoss_div_2B"]), TOL_NET)
                yield Result(file, "pipeline_t1_max", rel_err(t1_max, ref["pipeline_t1_max"]), TOL_NET)
        if not color:
            rf = _dbsn_nets(folder, ref, False, sigma_n_file=ref["weights_file_sigma_n_randfinal"])["sigma_n"]
            out_y, out_mu = rf(y), rf(mu)
            yield Result(file, "randfinal_sigma_n_out", rel_err(out_y, ref["randfinal_sigma_n_out"]), TOL_NET)
            yield Result(file, "randfinal_sigma_n_out_on_mu", rel_err(out_mu, ref["randfinal_sigma_n_out_on_mu"]), TOL_NET)
            cov_n = noise_covariance(out_y, "awgn")
            yield Result(file, "randfinal_map_out_train_val", rel_err(posterior_mean(y, mu, cov_mu, cov_n), ref["randfinal_map_out_train_val"]), TOL_NET)
            per_pixel = noise_covariance(out_y, "awgn", per_pixel_awgn=True)
            for name, gamma in (("randfinal_map_out_test_gamma1", 1.0), ("randfinal_map_out_test_gamma0p9", 0.9)):
                out = posterior_mean(y, mu, cov_mu, per_pixel, gamma, gamma_on_prior=True)
                yield Result(file, name, rel_err(out, ref[name]), TOL_NET)
            hg = posterior_mean(y, mu, cov_mu, noise_covariance(out_mu, "hg"))
            yield Result(file, "randfinal_map_out_hg_path (sigma_n from mu)", rel_err(hg, ref["randfinal_map_out_hg_path"]), TOL_NET)
            for loss, key in (("map", "randfinal_pipeline_MAPLoss"), ("dbsn", "randfinal_pipeline_DBSNLoss")):
                value, hit, t1_max = gaussian_nll(y, mu, cov_mu, cov_n, loss)
                yield Result(file, f"{key} (overflow guard zeroes the value)", abs(value.item() - ref[key]) + (not hit), 0.0)
            yield Result(file, "randfinal_t1_max", rel_err(t1_max, ref["randfinal_t1_max"]), TOL_NET)


def check_dbsn_losses(folder: str, file: str) -> Iterator[Result]:
    from ..models.dbsn import gaussian_nll, l2_loss

    ref = _load(folder, file)
    y, mu, cov_mu, cov_n = ref["target"], ref["mu"], ref["sigma_mu"], ref["sigma_n"]
    for loss, pretrain, key in (("map", False, "MAPLoss"), ("dbsn", False, "DBSNLoss"),
                                ("map", True, "MAPLoss_Pretrain"), ("dbsn", True, "DBSNLoss_Pretrain")):
        value, _, t1_max = gaussian_nll(y, mu, cov_mu, cov_n, loss, pretrain)
        yield Result(file, key, rel_err(value.item(), ref[key]), TOL_NET)
    yield Result(file, "L2Loss", rel_err(l2_loss(y, mu).item(), ref["L2Loss"]), TOL_NET)
    if "t1_max" in ref:
        yield Result(file, "t1_max", rel_err(t1_max, ref["t1_max"]), TOL_NET)


DBSN_WEIGHTS = [f"dbsn_{c}_{n}_weights.pt" for c in ("color", "gray") for n in ("backbone", "sigma_mu", "sigma_n")]
DBSN_WEIGHTS.append("dbsn_gray_sigma_n_randfinal_weights.pt")
DBSN_BIASES = [f"dbsn_{c}_{n}_bias_perturbation.pt" for c in ("color", "gray") for n in ("backbone", "sigma_mu", "sigma_n")]
