"""The recipe's test-time views as eval, predict and serve's Predictor read them from a checkpoint: a run trained
with ``--flip-view`` is evaluated on the centre view and its mirror unless ``--no-flip-view`` says otherwise."""
import json

import torch

from alexnet.checkpoint import Checkpoint
from alexnet.cli.main import main
from alexnet.inference.evaluate import evaluate_checkpoints
from alexnet.inference.predict import Predictor


def _with_flip_view(path, value: bool):
    ckpt = Checkpoint.load(path)
    ckpt.config["flip_view"] = value
    ckpt.save(path)
    return ckpt


def test_eval_and_predict_follow_the_checkpoints_flip_view(tiny_run, tmp_path, capsys):
    best, data = tiny_run(tmp_path)
    ckpt = _with_flip_view(best, True)
    assert ckpt.flip_view and ckpt.views() == "centre + mirror" and ckpt.views(flip_view=False) == "centre crop"
    assert ckpt.views(ten_crop=True) == "10-crop"
    mirrored = evaluate_checkpoints([str(best)], split="test", progress=False)
    centre = evaluate_checkpoints([str(best)], split="test", flip_view=False, progress=False)
    assert (mirrored["views"], mirrored["flip_view"], centre["views"]) == ("centre + mirror", True, "centre crop")
    assert mirrored["loss"] != centre["loss"]                  # another average of softmaxes
    assert main(["eval", str(best), "--split", "test"]) == 0
    assert "centre + mirror" in capsys.readouterr().out
    assert main(["eval", str(best), "--split", "test", "--no-flip-view", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["views"] == "centre crop"
    predictor = Predictor(str(best), device="cpu")
    assert predictor.flip_view and predictor.transform.flip_view
    images = torch.randint(0, 256, (3, 28, 28, 1), dtype=torch.uint8).numpy()
    model = ckpt.build_model()
    x = ckpt.eval_transform(flip_view=False)(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    torch.testing.assert_close(predictor.probabilities(images), expected, atol=1e-5, rtol=0)
    assert not Predictor(str(best), device="cpu", flip_view=False).transform.flip_view
    _with_flip_view(best, False)
    assert evaluate_checkpoints([str(best)], split="test", progress=False)["views"] == "centre crop"
