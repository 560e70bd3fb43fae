"""`alexnet show kernels|neighbors`: the paper's Fig. 3 (conv1's kernels, two towers) and Fig. 4 (nearest
neighbours in feature space) as real PNGs."""
import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli.main import main
from alexnet.errors import UsageError
from alexnet.models import create_model
from alexnet.inspection.show import DPI, kernel_blocks, mosaic, nearest_neighbors, plot_kernels, plot_neighbors, scaled_kernels


@pytest.fixture
def run(tmp_path, monkeypatch, tiny_run):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    return tiny_run(tmp_path)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_scaled_kernels_fill_zero_to_one_each_and_keep_colour():
    weight = torch.randn(4, 3, 5, 5)
    weight[1] *= 100
    weight[2] = 0.3                                   # a constant kernel: mid grey, not a division by zero
    kernels = scaled_kernels(weight)
    assert kernels.shape == (4, 5, 5, 3)
    for i in (0, 1, 3):
        assert kernels[i].min() == 0 and kernels[i].max() == pytest.approx(1)
    np.testing.assert_allclose(kernels[2], 0.5)
    # one scale for the three channels: the colour (ratios between channels) is kept
    w = weight[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(kernels[0], (w - w.min()) / (w.max() - w.min()), rtol=1e-5, atol=1e-6)
    assert scaled_kernels(torch.randn(6, 1, 3, 3)).shape == (6, 3, 3, 1)
    tiles = mosaic(kernels, columns=3)                # 2 rows of 3 cells, 1-pixel white gaps
    assert tiles.shape == (2 * 6 + 1, 3 * 6 + 1, 3) and (tiles[0] == 1).all() and (tiles[:, 0] == 1).all()
    np.testing.assert_array_equal(tiles[7:12, 1:6], kernels[3])


def test_two_towers_kernels_are_two_blocks_of_48(tmp_path):
    """Fig. 3: the 48 kernels of GPU 1 above the 48 of GPU 2 [3.2], each block labelled."""
    model = create_model("alexnet_2012", num_classes=10)
    blocks = kernel_blocks(model, towers=True)
    assert [len(kernels) for _, kernels in blocks] == [48, 48]
    assert blocks[0][0].startswith("GPU 1") and blocks[1][0].startswith("GPU 2")
    weight = model.features.conv1.weight
    np.testing.assert_array_equal(blocks[1][1], scaled_kernels(weight)[48:])
    assert [len(k) for _, k in kernel_blocks(model, towers=False)] == [96]

    fig = plot_kernels(blocks, tmp_path / "kernels.png", "alexnet_2012")
    assert [ax.get_title() for ax in fig.axes] == [label for label, _ in blocks]
    pixels = _pixels(tmp_path / "kernels.png")
    height, width, _ = pixels.shape
    mosaic_width = mosaic(blocks[0][1], 16).shape[1]               # 16 kernels of 11 + gaps: 193
    assert 3 * mosaic_width <= width <= fig.get_figwidth() * DPI * 1.05   # each weight >= 3 screen pixels
    assert 0.4 * width < height < width
    assert pixels.std() > 30 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000   # random colours, not blank


def test_cli_show_kernels_writes_next_to_the_checkpoint(run, capsys):
    ckpt, _ = run
    assert main(["show", "kernels", str(ckpt)]) == 0
    png = ckpt.parent / "kernels.png"
    assert str(png) in capsys.readouterr().out
    pixels = _pixels(png)
    assert pixels.shape[1] >= 5 * (8 * 4 + 1)     # 8 columns of 3x3 kernels + gaps, >= 5 pixels a weight
    grey = pixels[..., 0]
    assert (pixels[..., 0] == pixels[..., 1]).all() and grey.std() > 30   # 1-channel kernels in grey, not blank
    assert main(["show", "kernels", str(ckpt), "--out", str(ckpt.parent / "k.png")]) == 0
    assert (ckpt.parent / "k.png").is_file()
    assert main(["show", "kernels", str(ckpt.parent / "nope.pt")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert main(["show"]) == 2 and "choose what to show" in capsys.readouterr().err


def test_nearest_neighbors_are_euclidean_nearest_first():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(300, 40)).astype(np.float32)
    queries = np.concatenate([pool[[17, 250]], rng.normal(size=(1, 40)).astype(np.float32)])
    found, distances = nearest_neighbors(queries, pool, k=6)
    assert found.shape == distances.shape == (3, 6)
    assert found[:, 0].tolist()[:2] == [17, 250] and (distances[:2, 0] == 0).all()
    brute = np.linalg.norm(queries[:, None] - pool[None], axis=2)
    np.testing.assert_array_equal(found, np.argsort(brute, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :6], rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match="--k 301"):
        nearest_neighbors(queries, pool, k=301)


def test_neighbors_figure_layout_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([[0, 1, 0, 2], [1, 1, 2, 0], [2, 2, 2, 2]])
    fig = plot_neighbors(rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8), np.array([0, 1, 2]),
                         rng.integers(0, 256, (3, 4, 28, 28, 1), dtype=np.uint8), labels,
                         np.sort(rng.random((3, 4)), 1), ["a", "b", "c"], tmp_path / "n.png", "title")
    grid = np.array(fig.axes).reshape(3, 5)                       # 3 queries, each with 4 neighbours
    assert [ax.get_title() for ax in grid[:, 0]] == ["query: a", "query: b", "query: c"]
    assert grid[0, 2].get_title().startswith("2: b") and grid[0, 2].title.get_color() == "red"
    assert grid[0, 3].title.get_color() == "green" and grid[2, 4].title.get_color() == "green"
    height, width, _ = _pixels(tmp_path / "n.png").shape
    assert 5 * 90 <= width <= fig.get_figwidth() * DPI           # about an inch a tile, margins cropped
    assert 3 * 100 <= height <= fig.get_figheight() * DPI * 1.1


def test_cli_show_neighbors_finds_a_training_query_itself_first(run, capsys):
    """Queries from the training split: each one's nearest training image is itself, at distance 0."""
    from alexnet.inspection.show import show_neighbors
    ckpt, data = run
    info = show_neighbors(str(ckpt), split="train", queries=4, k=3, seed=1, progress=False)
    assert [row[0] for row in info["neighbors"]] == info["queries"]
    assert max(row[0] for row in info["distances"]) < 1e-4 and min(row[1] for row in info["distances"]) > 0
    assert info["layer"] == "last hidden layer (input of classifier.fc8)"
    assert show_neighbors(str(ckpt), split="train", queries=4, k=3, seed=1, progress=False)["queries"] == info["queries"]

    out = ckpt.parent / "fig4.png"
    assert main(["show", "neighbors", str(ckpt), "--data", data, "--queries", "3", "--k", "5", "--out", str(out)]) == 0
    assert "3 test images and their 5 nearest training images" in capsys.readouterr().out
    pixels = _pixels(out)
    assert pixels.shape[1] > pixels.shape[0] > 300 and pixels.std() > 30
    assert main(["show", "neighbors", str(ckpt), "--k", "0"]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err
    assert main(["show", "neighbors", str(ckpt), "--k", "100"]) == 2        # 54 training images; 50 columns at most
    assert "--k must be <= 50" in capsys.readouterr().err
    assert main(["show", "neighbors", str(ckpt), "--layer", "nope"]) == 2
    assert "--layer nope: no such layer" in capsys.readouterr().err


def test_queries_above_the_split_are_refused_before_any_feature_is_computed(run, monkeypatch):
    """Issue 23, item 9: --queries above the split's size (20 test images here) ran on with memory growing."""
    import alexnet.inspection.show as show
    ckpt, _ = run
    monkeypatch.setattr(show, "extract_features", lambda *a, **k: pytest.fail("features computed"))
    for queries in (21, 100000):
        with pytest.raises(UsageError, match=rf"--queries {queries}: choose 1 to 20 \(the test split has 20"):
            show.show_neighbors(str(ckpt), queries=queries, progress=False, device="cpu")
    with pytest.raises(UsageError, match="--k 55 is more than the 54 training images"):
        show.show_neighbors(str(ckpt), k=55, progress=False, device="cpu")
    with pytest.raises(UsageError, match="--seed must be >= 0"):
        show.show_neighbors(str(ckpt), seed=-1, progress=False, device="cpu")


@pytest.mark.parametrize("suffix,magic", [(".jpg", b"\xff\xd8\xff"), (".JPEG", b"\xff\xd8\xff"), (".pdf", b"%PDF"),
                                          (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_show_kernels_writes_the_format_its_suffix_names(tmp_path, tiny_checkpoint, suffix, magic):
    """Issue 23, item 28: k.jpg held PNG bytes."""
    ckpt = tiny_checkpoint(tmp_path / "best.pt")
    out = tmp_path / f"k{suffix}"
    assert main(["show", "kernels", ckpt, "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)
    assert main(["show", "kernels", ckpt, "--out", str(out)]) == 0      # an image it wrote may be replaced


def test_show_kernels_never_overwrites_a_file_that_is_not_an_image(tmp_path, tiny_checkpoint, capsys):
    ckpt = tiny_checkpoint(tmp_path / "best.pt")
    for name in ("notes.txt", "notes", "notes.png"):
        (tmp_path / name).write_text("my notes\n")
        assert main(["show", "kernels", ckpt, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "Traceback" not in err
        assert (tmp_path / name).read_text() == "my notes\n"
