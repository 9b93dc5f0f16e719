"""Entry points of ``train.py``, ``valid.py`` and ``test.py`` (and the console scripts)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, List, Optional

from .errors import UserError, user_message


def _parser(script: str, description: str) -> argparse.ArgumentParser:
    """``script`` (train.py, ...) names usage lines unless a console script (atbsn-train) was run."""
    typed = os.path.basename(sys.argv[0] or "")
    p = argparse.ArgumentParser(prog=typed if typed.startswith("atbsn-") else script, description=description)
    p.add_argument("-opt", "--opt", required=True, metavar="FILE.yml", help="options file")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, values parsed as YAML scalars, e.g. train.total_iter=2000")
    return p


def _guard(main: Callable[[List[str]], int], argv: Optional[List[str]]) -> int:
    """User errors end in one clear line on stderr (exit 2), not a traceback."""
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {user_message(err)}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; the last saved checkpoint is kept (resume with --auto_resume)", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- train
def _train(argv: List[str]) -> int:
    p = _parser("train.py", "Train a denoiser from a YAML options file.")
    p.add_argument("--auto_resume", action="store_true", help="continue from the newest valid checkpoint")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from .utils.allocator import keep_freed_memory

    keep_freed_memory()  # same-sized tensors every step: reuse them instead of faulting in new pages
    from .dist import cleanup, end_finished_worker, init_dist
    from .evaluation import format_summary
    from .options import load_options
    from .train.loop import Trainer

    opt = load_options(args.opt, args.set)
    dist = init_dist(args.launcher, opt["dist"]["backend"], opt["dist"]["timeout_s"], args.local_rank)
    try:
        summary = Trainer(opt, dist, auto_resume=args.auto_resume).fit()
        if summary and dist.is_main:
            print("final validation:")
            for line in format_summary(summary):
                print("  " + line)
    finally:
        cleanup()
    if dist.enabled:
        end_finished_worker()
    return 0


# --------------------------------------------------------------------------- valid
def _load_for_eval(opt: dict, local_rank=None):
    import torch

    from .errors import OptionsError
    from .models.setup import resolve_device, setup_model

    weights = opt["path"]["pretrain_network"]
    if not weights or (isinstance(weights, dict) and not any(weights.values())):
        raise OptionsError(f"{opt['_source']}: set 'path.pretrain_network' to the weights to evaluate "
                           f"(a checkpoint of train.py or an official .pth)")
    onnx_file = onnx_weights(weights)
    if onnx_file:
        from .deploy import OnnxModel

        model = OnnxModel(onnx_file)
        model.strength = dict(opt["val"]["strength"])
        return model
    device = resolve_device(opt["device"])
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return setup_model(opt, device)


def onnx_weights(weights) -> Optional[str]:
    """The .onnx file ``path.pretrain_network`` names (a path, or the inference role's entry), or None."""
    paths = list(weights.values()) if isinstance(weights, dict) else [weights]
    found = [p for p in paths if isinstance(p, str) and p.lower().endswith(".onnx")]
    return found[0] if found else None


def _valid(argv: List[str]) -> int:
    p = _parser("valid.py", "Evaluate a trained denoiser on paired or synthetic validation sets.")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="shard the sets across the processes of torchrun / srun")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from .data import build_eval_loader
    from .dist import cleanup, init_dist
    from .errors import OptionsError
    from .evaluation import Evaluator, format_summary, write_results
    from .metrics import build_metric
    from .options import load_options

    from .train.loop import RunLock, check_run_name

    opt = load_options(args.opt, args.set)
    check_run_name(opt["name"])
    sets = opt["datasets"].get("val") or {}
    if not sets:
        raise OptionsError(f"{opt['_source']}: valid.py needs 'datasets.val' (one or more named sets)")
    dist = init_dist(args.launcher, opt["dist"]["backend"], opt["dist"]["timeout_s"], args.local_rank)
    lock = None
    try:
        if dist.is_main:
            lock = RunLock(os.path.join(opt["path"]["results_root"], opt["name"]), "results folder")
        model = _load_for_eval(opt, dist.local_rank if dist.enabled else None)
        loaders = {name: build_eval_loader(cfg, f"datasets.val.{name}", dist.rank, dist.world_size)
                   for name, cfg in sets.items()}
        vcfg = opt["val"]
        out_dir = os.path.join(opt["path"]["results_root"], opt["name"])
        evaluator = Evaluator(loaders, [build_metric(m) for m in vcfg["metrics"]], vcfg["tile"]["size"],
                              vcfg["tile"]["overlap"], vcfg["tile"]["blend"], vcfg["tile"]["memory_limit_gb"])
        t0 = time.time()
        result = evaluator.run(model, os.path.join(out_dir, "images"), vcfg["save_images"],
                               progress=sys.stdout.isatty() and dist.is_main)
        if dist.is_main:
            csv_path, json_path = write_results(result, out_dir, {"weights": opt["path"]["pretrain_network"]})
            for line in format_summary(result["summary"]):
                print(line)
            print(f"{len(result['records'])} records in {time.time() - t0:.1f} s on {dist.world_size} process(es)")
            print(f"per-image metrics: {csv_path}\nsummary: {json_path}")
    finally:
        if lock:
            lock.release()
        cleanup()
    return 0


# --------------------------------------------------------------------------- test
def _test(argv: List[str]) -> int:
    p = _parser("test.py", "Denoise images (any size) and write them upright with their profile, EXIF and alpha.")
    p.add_argument("--input", help="an image file or a folder of images (default: datasets.test.root)")
    p.add_argument("--output", help="output folder (default: <results_root>/<name>/images, or .../submission)")
    p.add_argument("--overwrite", action="store_true", help="replace a submission already in the output folder")
    p.add_argument("--preview", metavar="FILE.png",
                   help="also write a contact sheet: per input, a noisy and a denoised crop at 100%% from its most "
                        "textured region")
    args = p.parse_args(argv)

    from concurrent.futures import ThreadPoolExecutor

    from .errors import DataError

    with ThreadPoolExecutor(max_workers=1) as pool:
        reader, listed = PhotosAhead(pool), None
        try:  # the first input decodes while the options are checked and torch loads (one core's work)
            listed = _input_paths(args.input) if args.input else None
            if listed:
                reader.start(listed[0])
        except DataError:
            pass  # said again after the options, in its turn
        return _denoise_files(args, reader, listed)


def _input_paths(path: str) -> List[str]:
    """The images ``--input`` names: a folder's image files, or one image file."""
    from .errors import DataError
    from .utils.image import is_image_file, list_images

    if os.path.isdir(path):
        return list_images(path, "input folder")
    if not os.path.isfile(path):
        raise DataError(f"input not found: '{path}'")
    if not is_image_file(path):
        raise DataError(f"'{path}' is not an image file")
    return [path]


class PhotosAhead:
    """Photos decoded on a worker thread before their turn; :meth:`read` returns one (or raises its
    error), decoding it now if it was not started."""

    def __init__(self, pool):
        self.pool, self.started = pool, {}

    def start(self, path: str) -> None:
        from .utils.photo import read_photo

        if path not in self.started:
            self.started[path] = self.pool.submit(read_photo, path)

    def read(self, path: str):
        from .utils.photo import read_photo

        future = self.started.pop(path, None)
        return future.result() if future is not None else read_photo(path)


def _denoise_files(args, reader: PhotosAhead, listed: Optional[List[str]]) -> int:
    """test.py after its arguments: ``listed`` is ``--input``'s images (None: not listed yet, or
    listing failed and is tried again here, so that an options error comes first)."""
    from concurrent.futures import ThreadPoolExecutor

    from .errors import DataError, OptionsError
    from .preview import ContactSheet
    from .options import load_options
    from .utils.image import convert_channels, list_images, to_tensor, writable_folder
    from .utils.photo import remove_partials, write_photo

    opt = load_options(args.opt, args.set)
    test_cfg = opt["datasets"].get("test") or {}
    from .submission import is_benchmark

    if not args.input and is_benchmark(test_cfg):
        return _submission(opt, test_cfg, args.output, args.overwrite)
    convert = bool(test_cfg.get("convert_color", False))
    if args.input:
        paths = listed if listed is not None else _input_paths(args.input)
    elif test_cfg.get("root"):
        paths = list_images(test_cfg["root"], "datasets.test.root")
    else:
        raise OptionsError(f"{opt['_source']}: give --input FILE_OR_DIR or set datasets.test.root")
    out_dir = args.output or os.path.join(opt["path"]["results_root"], opt["name"], "images")
    writable_folder(out_dir)
    stale = remove_partials(out_dir)
    if stale:
        print(f"removed {stale} temporary file(s) an interrupted run left in {out_dir}")
    test_opt = opt["test"]
    outputs = planned_outputs(paths, out_dir, test_opt["suffix"], test_opt["format"])
    if test_opt["skip_existing"]:
        todo = [(p, o) for p, o in zip(paths, outputs) if not os.path.exists(o)]
        print(f"test.skip_existing: skipped {len(paths) - len(todo)} input(s) whose output exists; "
              f"{len(todo)} to denoise")
        paths, outputs = [p for p, _ in todo], [o for _, o in todo]
    # ``reader`` decodes the first photo while torch loads and, when the network runs on a GPU, each
    # next photo while this one is denoised. On a CPU the network has the cores, and a decode beside
    # its tiles only added to the peak (+0.3 GB with 12-MP photos, benchmarks/performance.md).
    # Another thread encodes and writes the previous output.
    with ThreadPoolExecutor(max_workers=1) as writer:
        from .inference import denoise

        model = _load_for_eval(opt)
        channels = getattr(model.networks[model.inference_role], "in_channels", 3)
        tile = opt["val"]["tile"]
        t0 = time.time()
        reports, done, failures, megapixels = [], [], [], 0.0
        sheet = ContactSheet() if args.preview else None
        bar = progress(paths, opt["logger"]["progress_bar"], unit="img")

        def failed(path: str, err: DataError) -> None:
            if len(paths) == 1:  # one input: its error is the answer
                raise err
            failures.append((path, str(err)))

        def written(job) -> None:
            """Wait for one output's encode and write; count it, or its error against its input."""
            nonlocal megapixels
            future, path, out, measured, pixels = job
            try:
                future.result()
            except DataError as err:
                failed(path, err)
                return
            reports.extend(measured)
            done.append((path, out))
            megapixels += pixels / 1e6
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"{megapixels / max(time.time() - t0, 1e-9):.2f} MP/s")
            else:
                print(f"{path} -> {out}")

        ahead = decodes_ahead(model)
        pending = None
        for i, (path, out) in enumerate(zip(bar, outputs)):
            if ahead and i + 1 < len(paths):
                reader.start(paths[i + 1])
            try:
                photo = reader.read(path)
                stored = photo.samples.shape[2]
                if stored != channels and not convert:
                    raise DataError(f"image '{path}' is {'gray' if stored == 1 else 'RGB'} but the network takes "
                                    f"{channels} channel(s); set 'convert_color: true' on datasets.test to convert it")
                noisy = photo.tensor() if stored == channels else to_tensor(convert_channels(photo.pixels, channels))
                measured: list = []
                pred = denoise(model, noisy[None], tile["size"], tile["overlap"], tile["blend"],
                               tile["memory_limit_gb"], reports=measured)[0].numpy().transpose(1, 2, 0)
                if channels != stored:
                    pred = convert_channels(pred, stored)
                bits = output_bits(test_opt["bit_depth"], photo.depth, out)
            except DataError as err:
                failed(path, err)
                continue
            if pending is not None:
                written(pending)
            pending = (writer.submit(write_photo, out, pred, bits, photo.alpha, photo.icc_profile, photo.exif,
                                     test_opt["jpeg_quality"], photo.xmp, photo.png_chunks),
                       path, out, measured, noisy.shape[-2] * noisy.shape[-1])
            if sheet is not None:
                sheet.add(os.path.basename(path), photo.pixels, pred)
            del photo, noisy, pred
        if pending is not None:
            written(pending)
    seconds = time.time() - t0
    print(f"denoised {len(done)} image(s), {megapixels:.1f} MP in {seconds:.1f} s "
          f"({megapixels / max(seconds, 1e-9):.2f} MP/s) into {out_dir}")
    if sheet is not None and sheet.rows:
        sheet.write(args.preview)
        print(f"preview: {len(sheet.rows)} noisy / denoised crop pair(s) at 100% in {args.preview}")
    if reports:
        print(write_strength_report(os.path.join(out_dir, "strength.csv"), [p for p, _ in done],
                                    [o for _, o in done], reports))
    if failures:
        import sys

        print("\n".join([f"error: {len(failures)} of {len(failures) + len(done)} image(s) failed; the others "
                         f"are written:"] + [f"  {path}: {message}" for path, message in failures]
                        + ["fix or remove them, then rerun with --set test.skip_existing=true to do only what is "
                           "missing"]), file=sys.stderr)
        return 1
    return 0


def decodes_ahead(model) -> bool:
    """test.py decodes the next photo during this one's network only where the network leaves the
    CPU's cores free (a GPU)."""
    return getattr(getattr(model, "device", None), "type", "cpu") != "cpu"


def output_bits(setting, stored_depth: int, out: str) -> int:
    """test.bit_depth: ``same`` keeps 8-bit inputs 8-bit and deeper ones 16-bit; JPEG is always 8-bit."""
    if out.lower().endswith((".jpg", ".jpeg")):
        return 8
    return (16 if stored_depth > 8 else 8) if setting == "same" else int(setting)


def progress(items: list, setting: str, unit: str):
    """A tqdm bar (ETA and rate, on stderr) when logger.progress_bar says so; the list itself otherwise."""
    import sys

    if setting == "never" or (setting == "auto" and not sys.stderr.isatty()):
        return items
    from tqdm import tqdm

    return tqdm(items, unit=unit, dynamic_ncols=True)


def write_strength_report(csv_path: str, paths: List[str], outputs: List[str], reports: list) -> str:
    """``strength.csv`` beside the outputs (one row per image: the estimated noise, how much was
    changed and the estimated gain, all without a clean image); returns the one-line summary."""
    import csv

    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "output", "noise_sigma_8bit", "changed_rms_8bit", "mean_strength",
                    "estimated_gain_db", "kept_input", "heaviness", "nlm_weight"])
        for p, o, r in zip(paths, outputs, reports):
            w.writerow([p, o, f"{r.noise_sigma:.3f}", f"{r.changed_rms:.3f}", f"{r.mean_strength:.4f}",
                        f"{r.estimated_gain_db:.3f}", int(r.kept_input), f"{r.heaviness:.3f}",
                        f"{r.classical_mix:.3f}"])
    gains = [r.estimated_gain_db for r in reports]
    sigmas = [r.noise_sigma for r in reports]
    kept = sum(r.kept_input for r in reports)
    return (f"adaptive strength: estimated noise sigma {min(sigmas):.1f}-{max(sigmas):.1f} (8-bit levels), "
            f"estimated gain {min(gains):+.2f} to {max(gains):+.2f} dB (mean {sum(gains) / len(gains):+.2f}), "
            f"{kept} of {len(reports)} left as they were; per image: {csv_path}")


WRITABLE = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpeg", ".tif": ".tif", ".tiff": ".tiff",
            ".bmp": ".bmp", ".webp": ".webp", ".ppm": ".ppm", ".pgm": ".pgm"}


def planned_outputs(paths: List[str], out_dir: str, suffix: str, fmt: str = "png") -> List[str]:
    """``<out_dir>/<stem><suffix>.<format>`` per input (``same``: the input's extension, PNG for
    HEIC, which is read-only here), refused before anything is written when two inputs share a
    name (``a.png`` and ``a.tif``) or an output would replace an input."""
    from .errors import DataError

    def extension(p: str) -> str:
        return WRITABLE.get(os.path.splitext(p)[1].lower(), ".png") if fmt == "same" else f".{fmt}"

    outputs = [os.path.join(out_dir, f"{os.path.splitext(os.path.basename(p))[0]}{suffix}{extension(p)}")
               for p in paths]
    by_output: dict = {}
    for p, o in zip(paths, outputs):
        by_output.setdefault(os.path.realpath(o), []).append(p)
    clashes = [v for v in by_output.values() if len(v) > 1]
    if clashes:
        raise DataError(f"inputs {', '.join(repr(p) for p in clashes[0])} would both be written to "
                        f"'{outputs[paths.index(clashes[0][0])]}'; rename one of them")
    inputs = {os.path.realpath(p) for p in paths}
    for p, o in zip(paths, outputs):
        if os.path.realpath(o) in inputs:
            raise DataError(f"the output '{o}' would replace the input '{p}'; choose another --output folder "
                            f"or set test.suffix (e.g. --set test.suffix=_denoised)")
    return outputs


def _submission(opt: dict, test_cfg: dict, output: Optional[str], overwrite: bool) -> int:
    from . import submission

    out_dir = output or os.path.join(opt["path"]["results_root"], opt["name"], "submission")
    written, time_mp, megapixels, seconds = submission.write_submission(opt, test_cfg, out_dir, overwrite,
                                                                        lambda: _load_for_eval(opt))
    print(f"denoising time: {time_mp:.3f} s per megapixel ({megapixels:.1f} MP in {seconds:.1f} s)")
    print(f"wrote {len(written)} submission file(s) to {out_dir}")
    return 0


def train_main(argv: Optional[List[str]] = None) -> int:
    return _guard(_train, argv)


def valid_main(argv: Optional[List[str]] = None) -> int:
    return _guard(_valid, argv)


def test_main(argv: Optional[List[str]] = None) -> int:
    return _guard(_test, argv)
