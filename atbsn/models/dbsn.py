"""D-BSN (Wu et al., ECCV 2020): unpaired learning by a blind-spot prior and Bayes posterior inference.

Stage 1 models each noisy pixel as y = x + n with a Gaussian prior x ~ N(mu, Sigma_mu) predicted
from the pixel's neighbourhood (the blind-spot backbone, so mu cannot copy y) and noise
n ~ N(0, Sigma_n) from the noise-level network. Integrating x out, y ~ N(mu, Sigma_mu + Sigma_n), so
all three networks train by maximum likelihood on noisy images alone:

    MAP:  r^T Sigma_y^-1 r + log|Sigma_y|,                        r = y - mu, Sigma_y = Sigma_mu + Sigma_n
    DBSN: r^T Sigma_y^-1 r + log|Sigma_n| + tr(Sigma_n^-1 Sigma_mu)  (upper bound favouring small Sigma_mu)

(colour forms carry a 1/2, gray ones do not, as coded), averaged over pixels and divided by 2B. The
denoised pixel is the posterior mean

    x_hat = (Sigma_mu^-1 + gamma Sigma_n^-1)^-1 (Sigma_mu^-1 mu + gamma Sigma_n^-1 y).

Stage 2 (``DBSNDistillation``) trains a non-blind student on posterior means of noisy images and on
clean images re-noised with the learned noise model.

Covariances: gray images use per-pixel variances [B,1,H,W]; colour images 3x3 matrices [B,H,W,3,3]
(AWGN/HG diagonal; MG one full matrix per image, the pixel average of L L^T).
"""
from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, OptionsError, TrainingError
from .base_model import DenoisingModel, Progress

NoiseType = Literal["awgn", "hg", "mg"]
EPS = 1e-6
UPPER_TRIANGLE = (0, 1, 2, 4, 5, 8)  # row-major positions of the 6 raw values in a 3x3 factor


# --------------------------------------------------------------------------- covariance assembly
def noise_std(o: torch.Tensor) -> torch.Tensor:
    """Noise std from CNN_est's raw output: softplus(o - 4) + 1e-3 (about 4.9/255 at o = 0)."""
    return F.softplus(o - 4) + 1e-3


def image_covariance(raw: torch.Tensor) -> torch.Tensor:
    """[B,6,H,W] upper-triangular factors L -> the image's mean L L^T, [B,1,1,3,3]."""
    b, _, h, w = raw.shape
    factor = raw.new_zeros(b, h, w, 9)
    factor[..., list(UPPER_TRIANGLE)] = raw.permute(0, 2, 3, 1)
    factor = factor.view(b, h, w, 3, 3)
    return (factor @ factor.transpose(-1, -2)).mean(dim=(1, 2), keepdim=True)


def diagonal(var: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] variances -> [B,H,W,3,3] diagonal matrices."""
    return torch.diag_embed(var.permute(0, 2, 3, 1))


def prior_covariance(raw: torch.Tensor, noise: NoiseType) -> torch.Tensor:
    """Sigma_mu from the sigma_mu head: s^2 (gray), diag(s_c^2) (colour AWGN/HG), mean L L^T (MG)."""
    if raw.shape[1] == 1:
        return raw.square()
    return image_covariance(raw) if noise == "mg" else diagonal(raw.square())


def noise_covariance(raw: torch.Tensor, noise: NoiseType, per_pixel_awgn: bool = False) -> torch.Tensor:
    """Sigma_n from CNN_est: AWGN averages o over the image (per channel) before the softplus unless
    ``per_pixel_awgn`` (the official gray test script's overwrite bug); MG averages P P^T."""
    if noise == "mg":
        return image_covariance(raw)
    if noise == "awgn" and not per_pixel_awgn:
        raw = raw.mean(dim=(-2, -1), keepdim=True).expand_as(raw)
    var = noise_std(raw).square()
    return var if raw.shape[1] == 1 else diagonal(var)


def inverse3(m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Closed-form (adjugate) inverse and determinant of [..., 3, 3] matrices: exact, batched and
    far cheaper than generic batched LAPACK calls on millions of tiny matrices."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    co = torch.stack([e * i - f * h, c * h - b * i, b * f - c * e,
                      f * g - d * i, a * i - c * g, c * d - a * f,
                      d * h - e * g, b * g - a * h, a * e - b * d], dim=-1).view(m.shape)
    det = a * co[..., 0, 0] + b * co[..., 1, 0] + c * co[..., 2, 0]
    return co / det[..., None, None], det


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] -> [B,H,W,3,1] column vectors."""
    return x.permute(0, 2, 3, 1).unsqueeze(-1)


# --------------------------------------------------------------------------- likelihood losses
GUARD = {  # (channels, loss, pretrain) -> threshold on max t1 (None: no guard), as in the official classes
    ("gray", "map", False): 1e8, ("gray", "map", True): None, ("gray", "dbsn", False): 1e8, ("gray", "dbsn", True): 1e8,
    ("color", "map", False): 1e7, ("color", "map", True): 1e8, ("color", "dbsn", False): 1e7, ("color", "dbsn", True): 1e7,
}


def gaussian_nll(y: torch.Tensor, mu: torch.Tensor, cov_mu: torch.Tensor, cov_n: torch.Tensor,
                 loss: Literal["map", "dbsn"] = "map", pretrain: bool = False) -> Tuple[torch.Tensor, bool, float]:
    """(loss, overflow guard hit, max t1). ``pretrain`` detaches mu (sigma pre-training) and, for the
    colour MAP form, drops the clamp inside log det, as the official ``*_Pretrain`` classes do.

    The overflow guard reproduces the official semantics: a hit zeroes the loss *value* only; the
    gradient (and so the optimiser step) is unchanged.
    """
    if pretrain:
        mu = mu.detach()
    gray = y.shape[1] == 1
    r = y - mu
    if gray:
        cov_y = cov_mu + cov_n
        t1 = r.square() / cov_y
        if loss == "map":
            terms = t1 + torch.log(cov_y)
            t3 = None
        else:
            n_clamped = cov_n.clamp_min(EPS)
            t3 = cov_mu / n_clamped
            terms = t1 + torch.log(n_clamped) + t3
        value = terms.mean()
    else:
        cov_y = (cov_mu + cov_n).expand(*r.shape[:1], *r.shape[2:], 3, 3)
        inv_y, det_y = inverse3(cov_y)
        rv = _pixels(r)
        t1 = 0.5 * (rv.transpose(-1, -2) @ inv_y @ rv)[..., 0, 0]
        t3 = None
        if loss == "map":
            logdet = torch.log(det_y if pretrain else det_y.clamp_min(EPS))
            terms = t1 + 0.5 * logdet
        else:
            eye = torch.eye(3, dtype=cov_n.dtype, device=cov_n.device)
            _, det_n_raw = inverse3(cov_n)
            # tr((Sigma_n + eps I)^-1 Sigma_mu): nearly singular at eps, so LU (as the official eigen route
            # matches) rather than the adjugate
            cov_mu_b, cov_n_b = torch.broadcast_tensors(cov_mu, cov_n + EPS * eye)
            trace = torch.linalg.solve(cov_n_b, cov_mu_b).diagonal(dim1=-2, dim2=-1).sum(-1)
            terms = t1 + 0.5 * torch.log(det_n_raw.clamp_min(EPS)) + 0.5 * trace.expand_as(t1)
        value = terms.mean()
    threshold = GUARD[("gray" if gray else "color", loss, pretrain)]
    t1_max = float(t1.detach().max())
    hit = threshold is not None and (t1_max > threshold or (t3 is not None and float(t3.detach().max()) > threshold))
    if hit:
        value = value - value.detach()  # value 0, same gradient
    return value, hit, t1_max


def l2_loss(y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """mu pre-training: mean r^2 for gray, sum r^2 for colour (as coded)."""
    r2 = (y - mu).square()
    return r2.mean() if y.shape[1] == 1 else r2.sum()


def posterior_mean(y: torch.Tensor, mu: torch.Tensor, cov_mu: torch.Tensor, cov_n: torch.Tensor,
                   gamma: float = 1.0, gamma_on_prior: bool = False) -> torch.Tensor:
    """x_hat = (Sigma_mu^-1 + gamma Sigma_n^-1)^-1 (Sigma_mu^-1 mu + gamma Sigma_n^-1 y).

    Colour adds 1e-6 I to each matrix before inverting and to the sum (the official code). Gray uses
    the scalar form; ``gamma_on_prior`` reproduces the gray test script, which puts gamma on the mu
    term instead: (y s_mu + gamma mu s_n) / (s_mu + gamma s_n). Identical at gamma = 1.
    """
    if y.shape[1] == 1:
        if gamma_on_prior:
            return (y * cov_mu + gamma * mu * cov_n) / (cov_mu + gamma * cov_n)
        return (gamma * y * cov_mu + mu * cov_n) / (gamma * cov_mu + cov_n)
    eye = torch.eye(3, dtype=y.dtype, device=y.device)
    inv_mu, _ = inverse3(cov_mu + EPS * eye)
    inv_n, _ = inverse3(cov_n + EPS * eye)
    precision, _ = inverse3(inv_mu + gamma * inv_n + EPS * eye)
    out = precision @ (inv_mu @ _pixels(mu) + gamma * (inv_n @ _pixels(y)))
    return out[..., 0].permute(0, 3, 1, 2)


def _check_finite(t: torch.Tensor, role: str, progress: Optional[Progress]) -> None:
    if not torch.isfinite(t).all():
        when = f" at iteration {progress.iteration + 1}" if progress is not None else ""
        raise TrainingError(f"networks.{role} produced non-finite values{when}: lower train.optimizer.lr or resume "
                            f"from an earlier checkpoint")


class DBSNModel(DenoisingModel):
    """The three D-BSN stages on ``net`` (blind-spot backbone returning (mu, f)), ``sigma_mu`` and
    ``sigma_n``:

    * ``mu_pretrain``: L2 between mu and the noisy image (backbone only);
    * ``sigma_pretrain``: the backbone frozen (eval mode, mu and f detached), the sigma networks by
      the pretrain form of ``loss``;
    * ``joint``: all three by ``loss`` (``map``, what the released scripts run; ``dbsn``, the
      constrained likelihood of the paper's text).

    Inference is the posterior mean with ``gamma``.
    """

    network_roles = ("net", "sigma_mu", "sigma_n")
    inference_role = "net"
    # The official checkpoints are one dict holding the three networks' state dicts.
    OFFICIAL_CONTAINERS = {"net": "state_dict_dbsn", "sigma_mu": "state_dict_sigma_mu", "sigma_n": "state_dict_sigma_n"}

    @classmethod
    def official_state_dict(cls, obj: dict, role: str, path: str) -> Optional[Dict[str, torch.Tensor]]:
        if not any(k in obj for k in cls.OFFICIAL_CONTAINERS.values()):
            return None
        if cls.OFFICIAL_CONTAINERS.get(role) not in obj:
            held = ", ".join(k for k in obj if str(k).startswith("state_dict"))
            raise CheckpointError(f"'{path}' is an official D-BSN checkpoint ({held}); it has no network for role "
                                  f"'{role}' (roles: {', '.join(cls.OFFICIAL_CONTAINERS)})")
        return obj[cls.OFFICIAL_CONTAINERS[role]]

    def __init__(self, networks, noise: NoiseType = "awgn", stage: Literal["mu_pretrain", "sigma_pretrain", "joint"] = "joint",
                 loss: Literal["map", "dbsn"] = "map", gamma: float = 1.0, gamma_on_prior: bool = False,
                 per_pixel_awgn_test: bool = False):
        super().__init__(networks)
        channels = getattr(self.networks["net"], "in_channels", None)
        if noise == "mg" and channels != 3:
            raise OptionsError(f"model.noise 'mg' (multivariate Gaussian) needs a colour backbone; networks.net has "
                               f"{channels} input channel(s)")
        self.noise, self.stage, self.loss_type, self.gamma = noise, stage, loss, gamma
        self.gamma_on_prior, self.per_pixel_awgn_test = gamma_on_prior, per_pixel_awgn_test
        self.trainable_roles = {"mu_pretrain": ("net",), "sigma_pretrain": ("sigma_mu", "sigma_n"),
                                "joint": ("net", "sigma_mu", "sigma_n")}[stage]
        self.guard_hits = 0
        self._check_heads()

    def training_state(self) -> Dict[str, int]:
        return {"guard_hits": self.guard_hits}

    def load_training_state(self, state: Dict[str, int]) -> None:
        self.guard_hits = int(state.get("guard_hits", 0))

    def _check_heads(self) -> None:
        c = self.networks["net"].in_channels
        out_mu, out_n = self.networks["sigma_mu"].out_channels, self.networks["sigma_n"].out_channels
        want = 1 if c == 1 else (6 if self.noise == "mg" else 3)
        if (out_mu, out_n) != (want, want):
            raise OptionsError(f"D-BSN with {c}-channel images and noise '{self.noise}' needs sigma_mu and sigma_n with "
                               f"out_channels {want}; got {out_mu} and {out_n}")
        if self.networks["sigma_n"].in_channels != c:
            raise OptionsError(f"networks.sigma_n.in_channels must be {c} (it reads the image or mu)")

    def check_options(self, opt: dict) -> None:
        c = self.networks["net"].in_channels
        for where, cfg in [("datasets.train", opt["datasets"].get("train"))] + [
                (f"datasets.val.{k}", v) for k, v in (opt["datasets"].get("val") or {}).items()]:
            if cfg and cfg.get("channels", 3) != c:
                raise OptionsError(f"{where}.channels is {cfg.get('channels', 3)} but networks.net has in_channels {c}: "
                                   f"a {'gray' if c == 1 else 'colour'} D-BSN needs {c}-channel images "
                                   f"(set {where}.channels: {c})")

    def _check_channels(self, y: torch.Tensor) -> None:
        c = self.networks["net"].in_channels
        if y.shape[1] != c:
            raise OptionsError(f"D-BSN networks.net expects {c}-channel images, got {y.shape[1]}: use a "
                               f"{'gray' if y.shape[1] == 1 else 'colour'} config or set the datasets' channels: {c}")

    def estimate(self, y: torch.Tensor, progress: Optional[Progress] = None, per_pixel_awgn: bool = False):
        """(mu, Sigma_mu, Sigma_n) for noisy y. HG reads the noise level off mu (not detached)."""
        frozen = self.stage == "sigma_pretrain"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            mu, f = self.run("net", y)
        if frozen:
            mu, f = mu.detach(), f.detach()
        raw_mu = self.run("sigma_mu", f)
        raw_n = self.run("sigma_n", mu if self.noise == "hg" else y)
        _check_finite(raw_mu, "sigma_mu", progress)
        _check_finite(raw_n, "sigma_n", progress)
        return mu, prior_covariance(raw_mu, self.noise), noise_covariance(raw_n, self.noise, per_pixel_awgn)

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        y = self.prepare_input(batch["noisy"])
        self._check_channels(y)
        scale = 1.0 / (2 * y.shape[0])
        if self.stage == "mu_pretrain":
            mu, _ = self.run("net", y)
            loss = l2_loss(y, mu)
            return {"loss": loss * scale, "l2": loss.detach()}
        mu, cov_mu, cov_n = self.estimate(y, progress)
        nll, hit, t1_max = gaussian_nll(y, mu, cov_mu, cov_n, self.loss_type, pretrain=self.stage == "sigma_pretrain")
        self.guard_hits += int(hit)
        return {"loss": nll * scale, f"nll_{self.loss_type}": nll.detach(), "t1_max": torch.tensor(t1_max),
                "guard_hits": torch.tensor(float(self.guard_hits))}

    def network_forward(self, y: torch.Tensor) -> torch.Tensor:
        """The posterior mean (mu alone after ``mu_pretrain``, whose sigma heads are untrained)."""
        self._check_channels(y)
        if self.stage == "mu_pretrain":
            return self.run("net", y)[0]
        mu, cov_mu, cov_n = self.estimate(y, per_pixel_awgn=self.per_pixel_awgn_test)
        return posterior_mean(y, mu, cov_mu, cov_n, self.gamma, self.gamma_on_prior)


class DBSNDistillation(DBSNModel):
    """Stage 2: a non-blind ``student`` (MWCNN or any registered net) learns from the frozen stage-1 nets.

    Of each batch of clean/noisy pairs, the first ``B / noisy_fraction_denominator`` noisy images
    get posterior-mean pseudo-targets; the other images' *clean* versions are re-noised with the
    learned noise model, y~ = x + kappa sigma_n(x) z with one kappa ~ U(0.9, 1.1) per batch:

        L = [w_pseudo MSE(S(y_i), x_hat_i) + w_synthetic MSE(S(y~_j), x_j)] / 2B
    """

    network_roles = ("net", "sigma_mu", "sigma_n", "student")
    inference_role = "student"

    default_losses = {"pseudo": {"type": "MSELoss"}, "synthetic": {"type": "MSELoss"}}

    def __init__(self, networks, noise: NoiseType = "awgn", gamma: float = 1.0, pseudo_weight: float = 0.1,
                 synthetic_weight: float = 1.0, noisy_fraction_denominator: int = 8, kappa_range: Tuple[float, float] = (0.9, 1.1),
                 losses: Optional[Dict[str, dict]] = None):
        super().__init__(networks, noise=noise, stage="joint", gamma=gamma)
        self.losses = self.build_losses(losses)
        self.trainable_roles = ("student",)
        self.pseudo_weight, self.synthetic_weight = pseudo_weight, synthetic_weight
        self.split, self.kappa_range = noisy_fraction_denominator, tuple(kappa_range)

    def check_options(self, opt: dict) -> None:
        super().check_options(opt)
        train = opt["datasets"].get("train") or {}
        b = train.get("batch_size", 1)
        if b % self.split:
            raise OptionsError(f"datasets.train.batch_size ({b}) must be divisible by {self.split}: the first "
                               f"1/{self.split} of each batch gives pseudo-targets, the rest synthetic pairs")

    def synthesize(self, clean: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Noisy versions of clean images from CNN_est's noise model, scaled by one kappa per batch."""
        lo, hi = self.kappa_range
        kappa = lo + (hi - lo) * float(torch.rand((), generator=g))
        cov_n = noise_covariance(self.run("sigma_n", clean), self.noise)
        z = torch.randn(clean.shape, generator=g, dtype=clean.dtype).to(clean.device)
        if clean.shape[1] == 1:
            return clean + kappa * cov_n.sqrt() * z
        chol = torch.linalg.cholesky(cov_n.double())  # one factor per image (MG) or per pixel, then broadcast
        noise = (chol @ _pixels(z).double())[..., 0].permute(0, 3, 1, 2).to(clean.dtype)
        return clean + kappa * noise

    def training_step(self, batch: Dict[str, torch.Tensor], progress: Progress) -> Dict[str, torch.Tensor]:
        if "clean" not in batch:
            raise OptionsError("D-BSN distillation needs clean images as well (datasets.train: SyntheticNoiseDataset "
                               "or PairedFolderDataset)")
        noisy, clean = self.prepare_input(batch["noisy"]), self.prepare_input(batch["clean"])
        self._check_channels(noisy)
        b = noisy.shape[0]
        k = max(1, b // self.split)
        seed = int(batch["seed"][0]) if "seed" in batch else int(torch.randint(0, 2**31 - 1, ()))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            y_i = noisy[:k]
            mu, cov_mu, cov_n = self.estimate(y_i)
            pseudo = posterior_mean(y_i, mu, cov_mu, cov_n, self.gamma)
            x_j = clean[k:]
            synthetic = self.synthesize(x_j, g) if len(x_j) else x_j
        loss_pseudo = self.losses["pseudo"](self.run("student", y_i), pseudo)
        loss_syn = self.losses["synthetic"](self.run("student", synthetic), x_j) if len(x_j) else noisy.new_zeros(())
        loss = (self.pseudo_weight * loss_pseudo + self.synthetic_weight * loss_syn) / (2 * b)
        return {"loss": loss, "mse_pseudo": loss_pseudo.detach(), "mse_synthetic": loss_syn.detach()}

    def network_forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.run("student", y)
