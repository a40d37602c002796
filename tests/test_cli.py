"""mnist-predict and DigitReader on images like the ones people have: real MNIST test digits, made
photo-like (scaled up, off-centre on light paper with dark ink and noise, PNG or JPEG), and every kind
of bad input, each of which must give one `error: FILE: reason` line while the good files are still read."""

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.inference.views import VIEWS
from digitlab.serving import cli
from digitlab.serving.reader import DigitReader
from tests.conftest import default_sigint

LINE = re.compile(r"^(?P<path>.+): (?P<digit>\d) \((?P<percent>\d+\.\d)%\), runner-up (?P<runner_up>\d)$")
FIELDS = {"path", "digit", "confidence", "runner_up", "probabilities", "error"}


def photo(digit: np.ndarray, seed: int) -> Image.Image:
    """An MNIST digit as a user's picture of it: 100-300 px, dark ink, off-centre on larger, noisy light paper."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(100, 301))
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    height, width = side + int(rng.integers(60, 200)), side + int(rng.integers(60, 200))
    paper = rng.normal(225, 8, size=(height, width))
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    area = paper[top : top + side, left : left + side]
    paper[top : top + side, left : left + side] = area * (1 - ink) + 40 * ink
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))


def save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


@pytest.fixture
def good_file(tmp_path, digits) -> Path:
    """One photo-like PNG of the first test digit (a 7), to sit beside each bad input."""
    return save(photo(digits[0][0], seed=0), tmp_path / "good.png")


def run(capsys, *args) -> tuple[int, list[str], list[str]]:
    """mnist-predict in this process: exit status, stdout lines, stderr lines."""
    status = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def test_a_folder_of_photo_like_digits_is_read_one_line_each(small_model, digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "CHUNK", 4)  # read in chunks of 4, 4 and 2: no file lost or repeated at their seams
    folder = tmp_path / "photos"
    folder.mkdir()
    images, labels = digits
    for index in range(10):  # half PNG, half JPEG; the digits' names sort in this order
        save(photo(images[index], seed=index), folder / f"digit{index:02}.{'png' if index % 2 else 'jpg'}")
    (folder / "notes.txt").write_text("not an image, and not picked up: its extension is not an image's")

    status, out, err = run(capsys, folder, "--model", small_model)

    assert (status, err) == (0, [])
    assert len(out) == 10
    lines = [LINE.match(line) for line in out]
    assert all(lines), out
    assert [Path(line["path"]).name for line in lines] == sorted(path.name for path in folder.glob("digit*"))
    right = sum(int(line["digit"]) == label for line, label in zip(lines, labels))
    assert right >= 9, out


def test_json_prints_one_object_per_line_with_the_readers_fields(small_model, good_file, capsys):
    status, out, err = run(capsys, good_file, good_file, "--json", "--model", small_model)

    assert (status, err, len(out)) == (0, [], 2)
    for line in out:
        reading = json.loads(line)
        assert set(reading) == FIELDS
        assert reading["path"] == str(good_file)
        assert reading["digit"] == 7 and reading["error"] is None
        assert len(reading["probabilities"]) == 10 and sum(reading["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert reading["confidence"] == max(reading["probabilities"])
        # The runner-up has the second largest probability (as printed, rounded: a tie may come first).
        assert reading["probabilities"][reading["runner_up"]] == sorted(reading["probabilities"])[-2]
        assert reading["runner_up"] != reading["digit"]


def test_show_draws_a_png_figure_also_for_bad_files(small_model, good_file, tmp_path, capsys):
    blank = save(Image.new("L", (120, 120), 255), tmp_path / "blank.png")
    figure = tmp_path / "figures" / "readings.png"

    status, out, err = run(capsys, good_file, blank, "--show", figure, "--model", small_model)

    assert status == 1 and len(out) == 1 and err == [f"error: {blank}: no digit found"]
    with Image.open(figure) as drawn:
        assert drawn.format == "PNG" and drawn.height > 300  # a row for each of the two images


def test_show_draws_only_the_first_images_and_says_so(small_model, good_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SHOW_LIMIT", 2)
    figure = tmp_path / "readings.png"

    status, out, err = run(capsys, good_file, good_file, good_file, "--show", figure, "--model", small_model)

    assert (status, len(out)) == (0, 3)
    assert err == [f"note: {figure} shows the first 2 of 3 images"]
    assert figure.is_file()


def test_show_takes_only_a_png_name(good_file, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([str(good_file), "--show", "figure.pdf"])
    assert raised.value.code == 2
    assert "figure.pdf" in capsys.readouterr().err


def test_no_path_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([])
    assert raised.value.code == 2
    assert "PATH" in capsys.readouterr().err


def png(width: int, height: int, rows: int = 0) -> bytes:
    """A greyscale PNG whose header says width x height, with `rows` rows of black pixels written.

    Pillow checks the size in the header before it decodes anything, so a header can declare a huge
    image in a small file; writing its rows too (zeros, which compress well) makes it a real one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(1), bytes(1 + width)  # each row: filter byte 0, then the pixels
    pixels = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    photo(np.eye(28, dtype=np.uint8) * 255, seed=0).save(buffer, "PNG")
    return buffer.getvalue()[: buffer.tell() // 2]


def image_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


# Each bad input: its file name, its bytes (None: no such file; "folder": an empty folder) and its reason.
BAD_INPUTS = {
    "text named .png": ("notes.png", b"these are my notes, not a picture\n", "not an image Pillow can read"),
    "PDF": ("scan.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "not an image Pillow can read"),
    "truncated PNG": ("cut.png", truncated_png(), "not an image Pillow can read"),
    "empty file": ("empty.png", b"", "the file is empty"),
    "1x1 image": ("dot.png", image_bytes(Image.new("L", (1, 1))), "1x1 pixels, too small"),
    "PNG of 0 width": ("zero.png", png(0, 28), "not an image Pillow can read"),
    "blank white": ("white.jpg", image_bytes(Image.new("RGB", (200, 150), "white"), "JPEG"), "no digit found"),
    "blank black": ("black.png", image_bytes(Image.new("L", (200, 150), 0)), "no digit found"),
    "20,000 x 20,000 PNG": ("huge.png", png(20_000, 20_000, rows=20), "too large to read safely"),
    "no such file": ("absent.png", None, "no such file"),
    "folder without images": ("empty folder", "folder", "a folder with no images in it"),
}


@pytest.mark.parametrize("name, content, reason", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_a_bad_input_is_one_error_line_and_the_good_files_are_still_read(
    name, content, reason, small_model, good_file, tmp_path, capsys
):
    bad = tmp_path / name
    if content == "folder":
        bad.mkdir()
        (bad / "readme.txt").write_text("no images here")
    elif content is not None:
        bad.write_bytes(content)

    status, out, err = run(capsys, good_file, bad, good_file, "--model", small_model)

    assert status == 1
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: ") and reason in err[0], err
    assert out == [out[0], out[0]] and out[0].startswith(f"{good_file}: 7 (")


def test_a_portrait_phone_photo_is_read_upright(small_model, digits, tmp_path, capsys):
    # Stored sideways with EXIF orientation 6, as phones save portrait photos: read sideways, a 7 is no 7.
    upright = photo(digits[0][0], seed=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    upright.rotate(90, expand=True).save(path, "JPEG", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", "JPEG", quality=95)

    status, out, err = run(capsys, path, tmp_path / "upright.jpg", "--json", "--model", small_model)
    portrait, reference = (json.loads(line) for line in out)
    assert status == 0 and err == [] and portrait["digit"] == reference["digit"] == 7
    # The same reading as the upright photo's, to JPEG's rounding (sideways, the model still
    # guesses 7 here, but far less surely and with other runners-up).
    assert max(abs(a - b) for a, b in zip(portrait["probabilities"], reference["probabilities"])) < 0.02


def test_control_characters_in_a_file_name_keep_one_line_per_image(small_model, digits, tmp_path, capsys):
    named = save(photo(digits[0][0], seed=0), tmp_path / "seven\nnew line\x1b[31m.png")
    bad = tmp_path / "broken\n.png"
    bad.write_bytes(b"not an image")

    status, out, err = run(capsys, named, bad, "--model", small_model)
    assert status == 1
    assert out == [f"{tmp_path}/seven\\nnew line\\x1b[31m.png: " + out[0].split(".png: ", 1)[1]]
    assert out[0].split(".png: ", 1)[1].startswith("7 (")
    assert err == [f"error: {tmp_path}/broken\\n.png: " + err[0].split(".png: ", 1)[1]]
    # --json keeps the name itself: JSON escapes it.
    status, out, _ = run(capsys, named, "--json", "--model", small_model)
    assert json.loads(out[0])["path"] == str(named) and len(out) == 1


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak memory from Linux's /proc")
def test_a_huge_image_is_refused_without_decoding_it(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png(20_000, 20_000, rows=20_000))  # a complete image: 400 MB of pixels in 2 MB
    # The peak memory of the child alone: VmHWM, as getrusage's ru_maxrss would count pytest's from before exec.
    script = textwrap.dedent("""
        import re, sys
        from pathlib import Path
        from digitlab.images.mnist_look import ImageError, prepare

        def peak_mb():
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) // 1024

        before = peak_mb()
        try:
            print("read as", prepare(sys.argv[1]))
        except ImageError as error:
            print(error)
        print(peak_mb() - before)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(huge)], capture_output=True, text=True, timeout=60)

    *outcome, grown_mb = result.stdout.splitlines()
    assert "too large to read safely" in outcome[0] and int(grown_mb) < 50, (outcome, f"memory grew {grown_mb} MB")


def test_an_animated_gif_is_read_from_its_first_frame(small_model, digits, tmp_path, capsys):
    images, labels = digits
    first, second = photo(images[0], seed=0), photo(images[1], seed=1).resize(photo(images[0], seed=0).size)
    assert (labels[0], labels[1]) == (7, 2)
    gif = tmp_path / "animated.gif"
    first.save(gif, save_all=True, append_images=[second], duration=500, loop=0)

    status, out, err = run(capsys, gif, "--model", small_model)

    assert (status, err) == (0, [])
    assert LINE.match(out[0])["digit"] == "7"


def test_a_16_bit_png_is_read(small_model, digits, tmp_path, capsys):
    image = photo(digits[0][1], seed=1)
    sixteen = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)  # full 16-bit range, mode I;16
    assert sixteen.mode == "I;16"
    path = save(sixteen, tmp_path / "sixteen.png")
    with Image.open(path) as saved:
        assert saved.mode == "I;16"

    status, out, err = run(capsys, path, "--model", small_model)

    assert (status, err) == (0, [])
    assert LINE.match(out[0])["digit"] == "2"


def test_a_cmyk_jpeg_is_read(small_model, digits, tmp_path, capsys):
    path = save(photo(digits[0][2], seed=2).convert("CMYK"), tmp_path / "cmyk.jpg")
    with Image.open(path) as saved:
        assert saved.mode == "CMYK"

    status, out, err = run(capsys, path, "--model", small_model)

    assert (status, err) == (0, [])
    assert LINE.match(out[0])["digit"] == str(digits[1][2])


def test_a_missing_model_is_one_error_line(good_file, tmp_path, capsys):
    absent = tmp_path / "absent.onnx"

    status, out, err = run(capsys, good_file, "--model", absent)

    assert (status, out) == (1, [])
    assert len(err) == 1 and err[0].startswith("error: model file") and str(absent) in err[0] and "not found" in err[0]


def test_a_file_that_is_not_an_onnx_model_is_one_error_line(good_file, tmp_path, capsys):
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_text("not a model")

    status, out, err = run(capsys, good_file, "--model", not_a_model)

    assert (status, out) == (1, [])
    assert len(err) == 1 and err[0].startswith(f"error: {not_a_model} is not a readable ONNX model")


def test_a_keras_model_is_one_error_line_that_names_the_onnx_file(small_keras_model, good_file, capsys):
    status, out, err = run(capsys, good_file, "--model", small_keras_model)

    assert (status, out) == (1, [])
    onnx = small_keras_model.with_suffix(".onnx")
    assert err == [
        f"error: {small_keras_model} is a Keras model; digits are read with the ONNX model the train "
        f"stage writes beside it: give {onnx} (`dvc repro train` writes it, `dvc artifacts get "
        f"<repository URL> mnist-cnn-onnx` downloads it)"
    ]


def test_reading_digits_never_imports_tensorflow(small_model, good_file):
    """mnist-predict, DigitReader and the app, in a fresh process: each reads a digit, and TensorFlow, Keras,
    DVC and Matplotlib are never imported (the serving-only install has none of them)."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from digitlab.serving import app, cli, reader
assert cli.main([{str(good_file)!r}, "--model", {str(small_model)!r}]) == 0
assert reader.DigitReader({str(small_model)!r}).predict([{str(good_file)!r}])[0]["digit"] is not None
with TestClient(app.create_app({str(small_model)!r})) as client:
    assert client.post("/predict", files={{"image": open({str(good_file)!r}, "rb")}}).status_code == 200
print(sorted({{"tensorflow", "keras", "dvc", "matplotlib", "scipy"}} & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_the_function_reads_a_path_a_pil_image_and_an_array_alike(small_model, good_file):
    reader = DigitReader(small_model)
    image = Image.open(good_file)

    from_path, from_pil, from_array = reader.predict([good_file, image, np.asarray(image)])

    assert from_path["path"] == str(good_file) and from_pil["path"] is None and from_array["path"] is None
    for reading in (from_path, from_pil, from_array):
        assert set(reading) == FIELDS
        assert reading["digit"] == 7 and reading["error"] is None
        assert reading["probabilities"] == pytest.approx(from_path["probabilities"], abs=1e-5)


def test_the_function_gives_no_digit_and_a_reason_for_a_blank_image(small_model):
    (reading,) = DigitReader(small_model).predict([np.full((100, 100), 255, dtype=np.uint8)])

    assert reading == {
        "path": None,
        "digit": None,
        "confidence": None,
        "runner_up": None,
        "probabilities": None,
        "error": "no digit found",
    }


def test_the_installed_command_reads_a_folder_with_nothing_else_on_stderr(small_model, digits, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        save(photo(digits[0][index], seed=index), folder / f"{index}.png")
    (folder / "3.png").write_text("not an image")
    command = Path(sys.executable).parent / "mnist-predict"

    result = subprocess.run([command, folder, "--model", small_model], capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    # Nothing but the one bad file's line is on stderr.
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: {folder / '3.png'}: not an image")
    lines = [LINE.match(line) for line in result.stdout.splitlines()]
    expected = [(str(folder / f"{index}.png"), str(digits[1][index])) for index in range(3)]
    assert [(line["path"], line["digit"]) for line in lines] == expected


def test_output_cut_short_by_its_reader_ends_quietly(small_model, digits, tmp_path):
    # `mnist-predict FOLDER | head -1`: once head has its line, printing fails; that is no error of the command's.
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(300):
        save(photo(digits[0][index % 10], seed=index), folder / f"{index:03d}.png")
    command = Path(sys.executable).parent / "mnist-predict"
    # --json: 300 lines of JSON overflow the pipe's 64 KB, so the command is still writing when the reader goes.
    process = subprocess.Popen(
        [command, "--json", folder, "--model", small_model], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert json.loads(process.stdout.readline())["path"] == str(folder / "000.png")
    process.stdout.close()  # the reader goes away, as head does
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in errors and "BrokenPipe" not in errors, errors


def test_ctrl_c_stops_the_command_with_one_line(small_model, digits, tmp_path):
    # Ctrl-C signals the whole process group, worker processes included: one line, exit 130, no traceback.
    # Two chunks of images, read by the worker processes, then a FIFO that no one ever writes to: reading
    # it waits for ever, so the command cannot finish before the signal comes, however fast the machine.
    folder = tmp_path / "photos"
    folder.mkdir()
    save(photo(digits[0][0], seed=0), tmp_path / "one.png")
    for index in range(2 * cli.CHUNK):
        (folder / f"{index:04d}.png").symlink_to(tmp_path / "one.png")
    never_written = tmp_path / "never-written.png"
    os.mkfifo(never_written)
    command = Path(sys.executable).parent / "mnist-predict"
    # SIGINT as a terminal gives it, even where this test runs as a background job that ignores it.
    process = subprocess.Popen(
        [command, folder, never_written, "--model", small_model],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        assert process.stdout.readline().startswith(str(folder))  # the first chunk is read: it is under way
        os.killpg(process.pid, signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # Ctrl-C did not stop it: it waits on the FIFO, with its workers
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130 and errors == "error: interrupted\n", errors


def test_the_reader_refuses_a_number_of_views_it_has_none_for(small_model):
    # At once, naming the numbers it takes, not as a KeyError at the first image read.
    for views in (0, 3, 10):
        with pytest.raises(ValueError, match=rf"^views={views}: test-time augmentation takes 1, 5 or 9 views$"):
            DigitReader(small_model, views=views)
    for views in VIEWS:
        assert DigitReader(small_model, views=views).views == views


def test_views_averages_the_prediction_over_shifted_copies(small_model, small_keras_model, digits, tmp_path, capsys):
    """--views 5 gives what the evaluate stage's evaluate.tta_views 5 gives: the mean over the image and its shifts,
    here computed with the Keras model the ONNX file was exported from."""
    from digitlab.images.mnist_look import prepare, to_model_input
    from digitlab.inference.views import shifted
    from digitlab.training.saving import load_model

    # A 7 and a 2 drawn over each other: the model is unsure, so its views differ by more than the printed digits.
    seven, two = digits[0][0], digits[0][1]
    blend = save(photo(np.maximum(seven, two), seed=0), tmp_path / "blend.png")
    status, out, err = run(capsys, blend, "--json", "--accept-all", "--views", "5", "--model", small_model)
    assert (status, err) == (0, [])
    image = to_model_input(prepare(blend)[None])
    model = load_model(small_keras_model)
    expected = np.mean([model.predict_on_batch(shifted(image, down, right))[0] for down, right in VIEWS[5]], axis=0)
    np.testing.assert_allclose(json.loads(out[0])["probabilities"], expected, atol=1e-5)
    status, out, err = run(capsys, blend, "--json", "--accept-all", "--model", small_model)  # the default: as evaluate
    np.testing.assert_allclose(json.loads(out[0])["probabilities"], expected, atol=1e-5)
    status, out, err = run(capsys, blend, "--json", "--accept-all", "--views", "1", "--model", small_model)
    assert not np.allclose(json.loads(out[0])["probabilities"], expected, atol=1e-4)  # one view differs
