"""Photo files (issue 21): read as a viewer shows them, written back with their profile, EXIF,
alpha and bit depth; broken files are errors naming the file; a folder batch goes on past them."""
import io
import os

import numpy as np
import pytest

from atbsn.errors import DataError
from atbsn.utils.photo import read_photo, remove_partials, write_photo

from conftest import SHARED, run_cli, student_a_options, write_options


def _pattern(h=24, w=40, seed=0):
    """An RGB image no flip or rotation maps onto itself (8-bit)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx * yy) % 256], 2).astype(np.uint8)
    return np.clip(img.astype(int) + rng.randint(-3, 4, img.shape), 0, 255).astype(np.uint8)


def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation=1, model="TestCam X100"):
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()  # Pillow writes it big-endian: OpenCV's TIFFs here are little-endian
    exif[0x0110] = model  # Model
    exif[0x0132] = "2026:12:03 10:00:00"  # DateTime
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x829A] = IFDRational(1, 250)  # Exif sub-IFD: ExposureTime
    exif.get_ifd(0x8769)[0x8827] = 3200  # ISO
    exif.get_ifd(0x8825)[2] = (IFDRational(52, 1), IFDRational(31, 1), IFDRational(7, 2))  # GPS latitude
    return exif


def _assert_same_tags(im, model="TestCam X100"):
    exif = im.getexif()
    assert exif[0x0110] == model and exif[0x0132] == "2026:12:03 10:00:00"
    assert exif.get_ifd(0x8769)[0x829A] == 0.004 and exif.get_ifd(0x8769)[0x8827] == 3200
    assert exif.get_ifd(0x8825)[2] == (52.0, 31.0, 3.5)


def _save(path, arr, **kw):
    from PIL import Image

    Image.fromarray(arr).save(path, **kw)
    return path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_every_exif_orientation_is_applied_as_pillow_shows_it(tmp_path, fmt):
    from PIL import Image, ImageOps

    arr = _pattern()
    for orientation in range(1, 9):
        path = str(tmp_path / f"o{orientation}.{fmt.lower()}")
        _save(path, arr, format=fmt, exif=_exif(orientation), **({"quality": 100} if fmt == "JPEG" else {}))
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
        photo = read_photo(path)
        assert photo.orientation == orientation
        assert photo.pixels.shape[:2] == shown.shape[:2] == ((24, 40) if orientation <= 4 else (40, 24))
        assert np.array_equal(np.round(photo.pixels * 255).astype(np.uint8), shown), orientation
        assert np.array_equal(photo.tensor().numpy().transpose(1, 2, 0), photo.pixels), orientation
        exif = Image.Exif()
        exif.load(photo.exif)
        assert exif[0x0112] == 1 and exif[0x0110] == "TestCam X100"


XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
       b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" tiff:Orientation="6" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
       b'<?xpacket end="w"?>')


@pytest.mark.parametrize("ext", ["jpg", "png", "tif"])
def test_xmp_is_carried_with_its_orientation_reset(tmp_path, ext):
    """A phone JPEG rotated by EXIF and XMP (Lightroom writes both): the output is upright, so both
    say 1, and the rest of the XMP (the rating) is kept, in every output format."""
    from PIL import Image

    src = _save(str(tmp_path / "phone.jpg"), _pattern(), quality=95, exif=_exif(6), xmp=XMP)
    photo = read_photo(src)
    assert photo.pixels.shape[:2] == (40, 24) and b'tiff:Orientation="1"' in photo.xmp
    out = str(tmp_path / f"out.{ext}")
    write_photo(out, photo.pixels, 8, None, photo.icc_profile, photo.exif, 95, photo.xmp)
    im = Image.open(out)
    assert im.info["xmp"] == photo.xmp and b'xmp:Rating="4"' in im.info["xmp"]
    assert im.getexif()[0x0112] == 1 and im.size == (24, 40)


def test_png_gamma_primaries_and_density_are_carried_into_png_outputs(tmp_path):
    """A PNG that states its gamma and primaries (no ICC profile) is rendered by them; without them a
    viewer assumes sRGB. They, and the pixel density, are copied into a PNG output unchanged."""
    import struct

    from PIL import Image

    from atbsn.utils.photo import _png_chunk

    _save(str(tmp_path / "plain.png"), _pattern())
    data = (tmp_path / "plain.png").read_bytes()
    chunks = (_png_chunk(b"gAMA", struct.pack(">I", 55556))  # gamma 1/1.8, an old Mac's
              + _png_chunk(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 21000, 71000, 15000, 6000))
              + _png_chunk(b"pHYs", struct.pack(">IIB", 11811, 11811, 1)))  # 300 dpi
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    (tmp_path / "mac.png").write_bytes(data[:ihdr_end] + chunks + data[ihdr_end:])
    photo = read_photo(str(tmp_path / "mac.png"))
    assert photo.png_chunks == chunks
    write_photo(str(tmp_path / "out.png"), photo.pixels, 8, None, photo.icc_profile, photo.exif, 95, photo.xmp,
                photo.png_chunks)
    out = Image.open(tmp_path / "out.png")
    assert out.info["gamma"] == pytest.approx(0.55556) and out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert out.info["chromaticity"] == pytest.approx((0.3127, 0.329, 0.64, 0.33, 0.21, 0.71, 0.15, 0.06))
    out.load()
    assert np.array_equal(np.asarray(out), _pattern())


def test_truncated_and_corrupt_files_are_errors_naming_the_file(tmp_path):
    photo = _save(str(tmp_path / "full.jpg"), _pattern(256, 256), quality=95)
    data = open(photo, "rb").read()
    (tmp_path / "short.jpg").write_bytes(data[:2048])  # an interrupted copy
    png = _save(str(tmp_path / "full.png"), _pattern(256, 256))
    pdata = open(png, "rb").read()
    (tmp_path / "short.png").write_bytes(pdata[: len(pdata) // 2])
    flipped = bytearray(pdata)
    flipped[len(pdata) // 2] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(flipped))
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name, words in (("short.jpg", "truncated"), ("short.png", "truncated"), ("crc.png", "CRC"),
                        ("junk.jpg", "corrupt")):
        with pytest.raises(DataError, match=words) as err:
            read_photo(str(tmp_path / name))
        assert name in str(err.value)
    assert read_photo(photo).pixels.shape == (256, 256, 3)


def test_written_files_keep_profile_exif_alpha_and_bit_depth(tmp_path):
    from PIL import Image

    icc, exif = _icc(), _exif(1).tobytes()
    rgb = _pattern().astype(np.float32) / 255
    alpha = (np.arange(24 * 40).reshape(24, 40, 1) % 256).astype(np.float32) / 255
    for ext in ("png", "jpg", "tif"):
        path = str(tmp_path / f"out.{ext}")
        write_photo(path, rgb, 8, None, icc, exif, quality=95)
        im = Image.open(path)
        assert im.info.get("icc_profile") == icc, ext
        _assert_same_tags(im)
    write_photo(str(tmp_path / "a.png"), rgb, 8, alpha, icc, exif)
    back = read_photo(str(tmp_path / "a.png"))
    assert np.array_equal(back.alpha, alpha) and back.icc_profile == icc
    deep = np.linspace(0, 1, 24 * 40 * 3, dtype=np.float32).reshape(24, 40, 3)
    for ext in ("png", "tif"):
        for a in (alpha, None):
            write_photo(str(tmp_path / f"d.{ext}"), deep, 16, a, icc, exif)
            back = read_photo(str(tmp_path / f"d.{ext}"))
            assert back.depth == 16 and np.abs(back.pixels - deep).max() <= 0.5 / 65535 + 1e-7
            assert back.icc_profile == icc, ext
            tags = Image.Exif()
            tags.load(back.exif)
            assert 0x0110 in tags and not {273, 279, 0x8773} & set(tags)  # a TIFF's strips are not the photo's tags
            im = Image.open(str(tmp_path / f"d.{ext}"))
            _assert_same_tags(im)
            if a is not None:
                assert np.array_equal(np.round(back.alpha * 255), np.round(alpha * 255))  # 8-bit alpha, exactly
                if ext == "tif":
                    assert im.tag_v2[338] in (2, (2,))  # ExtraSamples: unassociated alpha, as viewers read it
            else:
                assert back.alpha is None
            im.load()  # Pillow decodes the file whole too
    with pytest.raises(DataError, match="JPEG has no alpha"):
        write_photo(str(tmp_path / "a.jpg"), rgb, 8, alpha)
    for broken in (exif[:40], exif[:6] + b"MM\0*\0\0\0\x08\0\x09\x01\x10"):  # cut short: tags dropped, profile kept
        write_photo(str(tmp_path / "b.tif"), deep, 16, None, icc, broken)
        assert read_photo(str(tmp_path / "b.tif")).icc_profile == icc


def test_an_interrupted_write_leaves_no_output_and_stale_temporaries_are_removed(tmp_path, monkeypatch):
    import atbsn.utils.photo as photo_mod

    def killed(src, dst):
        raise KeyboardInterrupt  # as Ctrl-C between writing the bytes and the rename

    monkeypatch.setattr(photo_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_photo(str(tmp_path / "x.png"), _pattern().astype(np.float32) / 255)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    (tmp_path / ".y.partial-123.png").write_bytes(b"half")  # what a SIGKILL leaves
    assert remove_partials(str(tmp_path)) == 1 and os.listdir(tmp_path) == []


def test_heic_reads_with_pillow_heif_or_says_how_to_get_it(tmp_path, monkeypatch):
    import builtins

    try:
        import pillow_heif
    except ImportError:
        pillow_heif = None
    path = tmp_path / "phone.heic"
    if pillow_heif is not None:
        from PIL import Image

        pillow_heif.register_heif_opener()
        smooth = _pattern(64, 96)
        smooth[:, :, 2] = smooth[:, :, 0] // 2 + smooth[:, :, 1] // 2  # HEIC's 4:2:0 chroma keeps it
        Image.fromarray(smooth).save(path, format="HEIF", quality=-1, exif=_exif(6).tobytes())
        photo = read_photo(str(path))  # pillow-heif turns it upright itself; it is not turned twice
        assert photo.pixels.shape == (96, 64, 3) and photo.format == "HEIF"
        assert np.abs(photo.pixels * 255 - np.rot90(smooth, -1)).mean() < 3
    else:
        path.write_bytes(b"\0\0\0\x18ftypheic")
    real_import = builtins.__import__

    def no_heif(name, *a, **k):
        if name == "pillow_heif":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_heif)
    with pytest.raises(DataError, match="pip install pillow-heif"):
        read_photo(str(path))


def test_test_py_on_a_folder_of_camera_files(tmp_path, image_folder):
    """One batch: an upright-by-EXIF JPEG with a profile and camera tags, an RGBA PNG, a 16-bit
    PNG, a 16-bit TIFF and a truncated JPEG. The bad file is listed at the end (rc 1), the others
    are written upright with what they carried; a skip_existing rerun does only what is missing."""
    import cv2
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    icc = _icc()
    _save(str(photos / "phone.jpg"), _pattern(48, 80), quality=95, exif=_exif(6), icc_profile=icc)
    rgba = np.concatenate([_pattern(40, 40), (np.arange(1600).reshape(40, 40, 1) % 251).astype(np.uint8)], 2)
    _save(str(photos / "logo.png"), rgba)
    deep = (np.linspace(0, 65535, 40 * 56 * 3).reshape(40, 56, 3)).astype(np.uint16)
    cv2.imwrite(str(photos / "scan16.png"), deep[:, :, ::-1])
    write_photo(str(photos / "scan16.tif"), deep, icc_profile=icc, exif=_exif(1, "Scanner 16").tobytes())
    whole = _save(str(tmp_path / "whole.jpg"), _pattern(256, 256), quality=95)
    (photos / "broken.jpg").write_bytes(open(whole, "rb").read()[:2048])

    opt = student_a_options(tmp_path, image_folder, "photos")
    opt["test"] = {"format": "same"}
    path = write_options(tmp_path / "p.yml", opt)
    out = tmp_path / "out"
    code, stdout, err = run_cli("test.py", "-opt", path, "--input", str(photos), "--output", str(out),
                                "--preview", str(tmp_path / "sheet.png"))
    assert code == 1, err
    block = err[err.index("error: 1 of 5 image(s) failed"):]
    assert "broken.jpg" in block and "truncated" in block and "skip_existing" in block
    assert "denoised 4 image(s)" in stdout and "MP/s" in stdout
    assert sorted(os.listdir(out)) == ["logo.png", "phone.jpg", "scan16.png", "scan16.tif"]

    phone = Image.open(out / "phone.jpg")
    assert phone.size == (48, 80)  # stored 80 x 48 with orientation 6: shown, and written, upright
    assert phone.getexif()[0x0112] == 1 and phone.getexif()[0x0110] == "TestCam X100"
    assert phone.info["icc_profile"] == icc
    logo = read_photo(str(out / "logo.png"))
    assert np.array_equal(np.round(logo.alpha[:, :, 0] * 255).astype(np.uint8), rgba[:, :, 3])
    for name in ("scan16.png", "scan16.tif"):
        assert read_photo(str(out / name)).depth == 16
    scan = read_photo(str(out / "scan16.tif"))  # the 16-bit TIFF keeps its profile and tags
    assert scan.icc_profile == icc
    _assert_same_tags(Image.open(out / "scan16.tif"), "Scanner 16")
    sheet = read_photo(str(tmp_path / "sheet.png")).pixels
    assert sheet.shape[1] == 3 * (2 * 192 + 4) and sheet.shape[0] == 2 * (192 + 16)

    os.remove(out / "logo.png")
    os.remove(photos / "broken.jpg")
    before = os.path.getmtime(out / "phone.jpg")
    code, stdout, err = run_cli("test.py", "-opt", path, "--input", str(photos), "--output", str(out),
                                "--set", "test.skip_existing=true")
    assert code == 0, err
    assert "skipped 3 input(s) whose output exists; 1 to denoise" in stdout
    assert os.path.exists(out / "logo.png") and os.path.getmtime(out / "phone.jpg") == before


def test_an_output_that_cannot_be_written_is_listed_and_the_others_are_written(tmp_path, image_folder):
    """Outputs are encoded on a second thread while the next image is denoised: a write that fails
    there (an RGBA input asked for as JPEG) is still that input's error, listed at the end, and the
    images before and after it are written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _save(str(photos / "a.png"), _pattern(40, 48))
    rgba = np.concatenate([_pattern(40, 40), np.full((40, 40, 1), 200, np.uint8)], 2)
    _save(str(photos / "b_logo.png"), rgba)
    _save(str(photos / "c.png"), _pattern(48, 40))
    opt = student_a_options(tmp_path, image_folder, "photos")
    opt["test"] = {"format": "jpg"}
    path = write_options(tmp_path / "p.yml", opt)
    out = tmp_path / "out"
    code, stdout, err = run_cli("test.py", "-opt", path, "--input", str(photos), "--output", str(out))
    assert code == 1, err
    block = err[err.index("error: 1 of 3 image(s) failed"):]
    assert "b_logo.png" in block and "JPEG has no alpha" in block
    assert "denoised 2 image(s)" in stdout
    assert sorted(os.listdir(out)) == ["a.jpg", "c.jpg"]


def test_decoding_ahead_gives_the_same_files_and_errors(tmp_path, image_folder, monkeypatch, capsys):
    """On a GPU test.py decodes the next photo while this one is denoised: the same output bytes,
    and a broken file in the middle is still its own error, the photos after it written."""
    import atbsn.cli as cli

    photos = tmp_path / "photos"
    photos.mkdir()
    _save(str(photos / "a.jpg"), _pattern(48, 80), quality=95, exif=_exif(6))
    whole = _save(str(tmp_path / "whole.jpg"), _pattern(256, 256), quality=95)
    (photos / "b_broken.jpg").write_bytes(open(whole, "rb").read()[:2048])
    _save(str(photos / "c.png"), _pattern(40, 56))
    opt = student_a_options(tmp_path, image_folder, "photos")
    path = write_options(tmp_path / "p.yml", opt)
    written = {}
    for ahead in (False, True):
        monkeypatch.setattr(cli, "decodes_ahead", lambda model, ahead=ahead: ahead)
        out = tmp_path / f"out_{ahead}"
        assert cli.test_main(["-opt", path, "--input", str(photos), "--output", str(out)]) == 1
        err = capsys.readouterr().err
        assert "error: 1 of 3 image(s) failed" in err and "b_broken.jpg" in err and "truncated" in err
        written[ahead] = {name: (out / name).read_bytes() for name in sorted(os.listdir(out)) if name != "strength.csv"}
    assert sorted(written[True]) == ["a.png", "c.png"] and written[True] == written[False]


def test_the_first_photo_decodes_while_the_options_load_and_errors_keep_their_order(tmp_path, capsys):
    """test.py starts decoding its first input before it reads the options (which load torch): a
    broken options file is still the one error said, and a broken photo is said as itself."""
    from concurrent.futures import ThreadPoolExecutor

    import atbsn.cli as cli

    good = _save(str(tmp_path / "good.png"), _pattern(40, 56))
    whole = _save(str(tmp_path / "whole.jpg"), _pattern(256, 256), quality=95)
    (tmp_path / "broken.jpg").write_bytes(open(whole, "rb").read()[:2048])
    with ThreadPoolExecutor(1) as pool:
        reader = cli.PhotosAhead(pool)
        reader.start(good)
        reader.start(str(tmp_path / "broken.jpg"))
        assert np.array_equal(reader.read(good).samples, read_photo(good).samples) and not reader.started.get(good)
        with pytest.raises(DataError, match="broken.jpg.*truncated"):
            reader.read(str(tmp_path / "broken.jpg"))
        assert reader.read(good).samples.shape == (40, 56, 3)  # not started: decoded on the spot
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("name: [unclosed\n")
    assert cli.test_main(["-opt", str(bad_yaml), "--input", str(tmp_path / "broken.jpg")]) == 2
    err = capsys.readouterr().err
    assert "bad.yml" in err and "broken.jpg" not in err


def test_training_cache_holds_8_bit_photos_within_its_budget(tmp_path):
    """A folder that fits is cached at 8 bits and trains exactly as uncached; one that does not
    keeps a fixed reservoir of 256-px patches per photo, the same in every run, within the budget."""
    import torch

    from atbsn.data.datasets import NoisyFolderDataset

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        _save(str(folder / f"p{i}.png"), _pattern(600, 800, seed=i))
    keys = [(i % 6, 1000 + i) for i in range(24)]
    plain = NoisyFolderDataset(str(folder), crop_size=64, cache=False)
    cached = NoisyFolderDataset(str(folder), crop_size=64, cache=True)
    for k in keys:
        assert torch.equal(plain[k]["noisy"], cached[k]["noisy"])
    assert all(v[0][0].dtype == torch.uint8 for v in cached._cache.values())
    assert torch.equal(plain[0]["noisy"], cached[0]["noisy"])  # whole images for validation

    budget_gb = 6e-3  # 6.4 MB; the photos need 6 x 1.44 MB at 8 bits: 5 patches (0.2 MB) per photo are kept
    small = NoisyFolderDataset(str(folder), crop_size=64, cache=True, cache_memory_gb=budget_gb)
    again = NoisyFolderDataset(str(folder), crop_size=64, cache=True, cache_memory_gb=budget_gb)
    assert small._reservoir() == 5
    for k in keys:
        a, b = small[k]["noisy"], again[k]["noisy"]
        assert torch.equal(a, b) and a.shape == (3, 64, 64) and a.dtype == torch.float32
    flat = NoisyFolderDataset(str(folder), crop_size=64, augment="none", cache=True, cache_memory_gb=budget_gb)
    for k in keys[:6]:  # without augmentation the crop is a window of the photo
        crop, full = flat[k]["noisy"].numpy(), plain[k[0]]["noisy"].numpy()
        rows = np.lib.stride_tricks.sliding_window_view(full, (3, 1, 64))[0, :, :, :, 0]  # (H, W-63, 3, 64)
        ys, xs = np.nonzero((rows == crop[:, 0]).all(axis=(2, 3)))
        assert any(np.array_equal(full[:, y:y + 64, x:x + 64], crop) for y, x in zip(ys, xs))
    held = sum(t.numel() * t.element_size() for key, v in small._cache.items() if key[0] == "patches"
               for patch in v for t in patch)
    assert held <= budget_gb * 2**30 and held == 6 * 5 * 3 * 256 * 256


def test_the_tensor_test_py_denoises_equals_the_float_pixels_at_every_depth(tmp_path):
    """test.py converts the stored samples with torch (one pass, all threads): every 8- and 16-bit
    value, gray and RGBA, and float TIFF give exactly NumPy's float32 pixels."""
    import cv2

    every8 = np.arange(256 * 3, dtype=np.uint16).reshape(16, 48, 1) % 256
    every16 = np.arange(65536, dtype=np.uint16).reshape(128, 512)
    rgb16 = np.stack([every16, every16[::-1], every16[:, ::-1]], 2)
    rgba = np.concatenate([np.repeat(every8, 3, 2), every8[::-1]], 2).astype(np.uint8)
    floats = np.random.RandomState(0).rand(16, 24, 3).astype(np.float32)
    files = {"g8.png": every8.astype(np.uint8), "rgba.png": rgba[:, :, [2, 1, 0, 3]], "rgb16.png": rgb16,
             "g16.tif": every16, "float.tif": floats}
    for name, arr in files.items():
        cv2.imwrite(str(tmp_path / name), arr)
        photo = read_photo(str(tmp_path / name))
        assert photo.depth == {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(arr.dtype, 32), name
        chw = photo.tensor()
        assert chw.dtype == __import__("torch").float32 and chw.shape[0] == photo.pixels.shape[2], name
        assert np.array_equal(chw.numpy().transpose(1, 2, 0), photo.pixels), name
    deep = read_photo(str(tmp_path / "rgb16.png")).tensor()
    assert deep.unique().numel() == 65536 and deep.min() == 0 and deep.max() == 1
    assert read_photo(str(tmp_path / "rgba.png")).alpha is not None


@pytest.mark.parametrize("depth", [8, 16])
def test_png_encoder_round_trips_every_layout_through_libpng_and_pillow(tmp_path, monkeypatch, depth):
    """test.py's PNG encoder ("up" filter, strips deflated on all cores, one zlib stream): gray,
    gray + alpha, RGB and RGBA at 8 and 16 bits decode to the same samples in OpenCV (libpng) and
    Pillow, across strip and IDAT boundaries, with the metadata chunks kept."""
    import cv2
    from PIL import Image

    import atbsn.utils.photo as photo_module

    monkeypatch.setattr(photo_module, "PNG_STRIP_BYTES", 1000)  # many strips on small images
    monkeypatch.setattr(photo_module, "PNG_IDAT_BYTES", 700)
    rng = np.random.RandomState(depth)
    dtype = np.uint16 if depth == 16 else np.uint8
    icc = _icc()
    for h, w in ((37, 29), (1, 50), (50, 1)):
        for c in (1, 2, 3, 4):
            smooth = (np.add.outer(np.arange(h), np.arange(w)) * (2 ** depth // 90))[:, :, None] + np.arange(c) * 7
            data = (smooth + rng.randint(0, 5, (h, w, c))).clip(0, 2 ** depth - 1).astype(dtype)
            path = str(tmp_path / f"x{h}_{w}_{c}.png")
            with open(path, "wb") as f:
                f.write(photo_module.encode_png(data, photo_module._png_metadata(icc, None)))
            libpng = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            libpng = libpng.reshape(h, w, -1)
            libpng = libpng[:, :, [2, 1, 0, 3][:c]] if c >= 3 else libpng
            if c == 2:  # OpenCV expands gray + alpha to BGRA
                libpng = libpng[:, :, [0, 3]]
            assert libpng.dtype == dtype and np.array_equal(libpng, data), (h, w, c)
            with Image.open(path) as im:
                assert im.info.get("icc_profile") == icc
                if depth == 8 or c == 1:  # Pillow has no 16-bit colour mode
                    assert np.array_equal(np.asarray(im).reshape(h, w, c), data), (h, w, c)
            back = read_photo(path)
            assert back.depth == depth and back.samples.shape[2] == (1 if c == 1 else 3)  # OpenCV reads LA as BGRA
            assert (back.alpha is not None) == (c in (2, 4))


def test_png_output_is_about_as_small_as_opencvs_on_photos():
    """The "up" filter with run-length deflate stays within 10% of libpng's default (OpenCV's)
    size on real photos (measured: -3% to +6% on these four, 35% smaller on a 12-MP photo)."""
    import glob

    import cv2

    from atbsn.utils.photo import encode_png

    kodak = sorted(glob.glob(os.path.join(SHARED, "data", "Kodak", "*.png")))
    if not kodak:
        pytest.skip(f"{SHARED}/data/Kodak is not there")
    for path in kodak[:4]:
        img = cv2.imread(path)[:, :, ::-1]
        ours = encode_png(np.ascontiguousarray(img))
        assert np.array_equal(cv2.imdecode(np.frombuffer(ours, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1], img)
        assert len(ours) < 1.1 * len(cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))[1]), path
