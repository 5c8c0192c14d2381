"""deepshrink search end to end on a tiny model: the goal, the files beside the .dsz, the recipe's
replay, the one-line errors."""

import json

import pytest
import torch
import yaml

from deepshrink.cli import main
from deepshrink.codec import load_compressed
from deepshrink.compress import CompressConfig
from deepshrink.io import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--budget", "2", "--finetune-epochs", "1", "--centroid-epochs", "1", "--no-progress"]


def test_search_maximizes_the_score_and_its_recipe_replays_to_the_same_weights(tmp_path, train_cli_model, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    out = tmp_path / "s.dsz"
    code = main(["search", str(model_file), "--out", str(out), "--data", spec, "--max-drop", "100", *FAST])
    text = capsys.readouterr().out
    assert code == 0, text
    for suffix in (".recipe.yaml", ".search.json", ".pareto.png", ".search.html"):
        assert (tmp_path / f"s{suffix}").is_file(), suffix
    found = json.loads((tmp_path / "s.search.json").read_text())
    assert found["goal"] == "score" and found["met"] and 1 <= len(found["candidates"]) <= 2
    assert found["path"][0]["move"] == "start" and len(found["path"]) > 3
    chosen = found["chosen"]
    assert chosen["file_bytes"] == out.stat().st_size        # the file written is the candidate scored
    assert chosen["ratio"] == pytest.approx(found["dense_bytes"] / out.stat().st_size)
    assert "validation" in found["val_on"] and "test split" in found["test_on"]
    page = (tmp_path / "s.search.html").read_text()
    assert 'src="data:image/png;base64,' in page and "Fine-tuned candidates" in page
    # the recipe: one compress step with the chosen per-layer choices; run replays it bit for bit
    recipe = yaml.safe_load((tmp_path / "s.recipe.yaml").read_text())
    (step,) = recipe["steps"]
    assert set(step) == {"compress"}
    if chosen["index"] >= 0:        # a point of the walk: every layer's bits and the map
        assert set(step["compress"]["bits"]) == {"fc1", "fc2", "fc3"} and step["compress"]["attempts"] == 1
    else:                           # compress's own defaults were the best: the step holds no per-layer choice
        assert "bits" not in step["compress"] and "attempts" not in step["compress"]
    assert found["candidates"][0]["index"] == -1 and found["candidates"][0]["described"].startswith("compress's")
    CompressConfig(**{k: tuple(v) if k == "linear_codebooks" else v for k, v in step["compress"].items()}).check()
    again = tmp_path / "again.dsz"
    assert main(["run", str(tmp_path / "s.recipe.yaml"), str(model_file), "--out", str(again), "--data", spec,
                 "--no-progress", "--no-latency"]) == 0
    a, b = load_compressed(out).state_dict(), load_compressed(again).state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_size_target_is_met_or_reported_with_exit_1(tmp_path, train_cli_model, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    fp32 = 4 * sum(p.numel() for p in load_model(model_file)[0].parameters())
    out = tmp_path / "t.dsz"
    capsys.readouterr()                                   # the training's own lines
    code = main(["search", str(model_file), "--out", str(out), "--data", spec, "--target-ratio", "20",
                 "--max-drop", "100", "--json", *FAST])
    got = json.loads(capsys.readouterr().out)
    assert code == 0 and got["goal"] == "ratio" and got["met"] and got["ratio"] >= 20
    assert out.stat().st_size <= fp32 / 20
    # a floor nobody can meet: the best candidate is still written, and the exit says so
    code = main(["search", str(model_file), "--out", str(tmp_path / "u.dsz"), "--data", spec,
                 "--target-ratio", "200", "--max-drop", "0", *FAST])
    text = capsys.readouterr().out
    if code == 1:
        assert "GOAL NOT MET" in text and (tmp_path / "u.dsz").is_file()


def test_search_errors_are_one_line(tmp_path, train_cli_model, run_error, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    out = tmp_path / "e.dsz"
    err = run_error(capsys, ["search", model_file, "--out", out, "--data", spec, "--target-memory", "1000", *FAST])
    assert "below the" in err and "prune-channels" in err
    err = run_error(capsys, ["search", model_file, "--out", tmp_path / "e.safetensors", "--data", spec, *FAST])
    assert ".dsz" in err
    err = run_error(capsys, ["search", model_file, "--out", out, "--data", spec, "--budget", "0"])
    assert "--budget" in err


def test_channels_first_lower_the_memory_and_the_recipe_replays_both_steps(tmp_path, train_cli_model, capsys):
    root, spec, model_file = train_cli_model(tmp_path, "mlp.safetensors")
    dense, info = load_model(model_file)
    from deepshrink.modelfile import example_input
    from deepshrink.profile.peak_memory import peak_memory
    M = peak_memory(dense, example_input(info)).predicted_peak_bytes
    out = tmp_path / "c.dsz"
    capsys.readouterr()
    code = main(["search", str(model_file), "--out", str(out), "--data", spec, "--channels", "0.5",
                 "--target-memory", str(int(M * 0.8)), "--max-drop", "100", "--json", *FAST])
    got = json.loads(capsys.readouterr().out)
    assert code == 0 and got["goal"] == "memory" and got["met"]
    assert got["score"]["memory"] <= M * 0.8 and got["score"]["original_memory"] == M   # measured against the original
    recipe = yaml.safe_load((tmp_path / "c.recipe.yaml").read_text())
    assert [next(iter(s)) for s in recipe["steps"]] == ["prune-channels", "compress"]
    assert recipe["steps"][0]["prune-channels"]["hold_out"] is True
    again = tmp_path / "again.dsz"
    assert main(["run", str(tmp_path / "c.recipe.yaml"), str(model_file), "--out", str(again), "--data", spec,
                 "--no-progress", "--no-latency"]) == 0
    a, b = load_compressed(out).state_dict(), load_compressed(again).state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
