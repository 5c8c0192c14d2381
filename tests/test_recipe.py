"""Recipes (deepshrink/recipe.py): every step's keys checked against its config dataclass before
anything runs, one error naming the step and the key; and the ledger's flags (deepshrink/ledger.py)."""

from __future__ import annotations

import pytest

from deepshrink.errors import ConfigError, FormatError
from deepshrink.ledger import FLAT_FLAG, ZEROS_FLAG, LedgerRow, flags, format_ledger
from deepshrink.pipelines import QuantizeConfig
from deepshrink.prune import PruneConfig
from deepshrink.recipe import load_recipe, parse_recipe, valid_keys


def test_a_recipe_builds_each_steps_configs():
    r = parse_recipe({"steps": [{"prune": {"sparsity": 0.8, "epochs": 2.0, "lr": 0.01, "exclude": ["fc3.*"]}},
                                {"kmeans": {"bits": 5, "seed": 3}}, "encode"]})
    prune, kmeans, encode = r.steps
    cfg = prune.config(PruneConfig)
    assert (cfg.sparsity, cfg.epochs, cfg.exclude) == (0.8, 2, ("fc3.*",))
    assert prune.finetune.lr == 0.01                          # the rate used: through Finetune
    q = kmeans.config(QuantizeConfig)
    assert (q.method, q.bits, kmeans.seed) == ("kmeans", 5, 3)
    assert encode.name == "encode" and encode.options == {}
    assert r.to_list()[2] == {"encode": {}}
    assert parse_recipe([{"qat": None}]).steps[0].config(QuantizeConfig).method == "linear"


def test_a_per_layer_sparsity_map_is_accepted():
    r = parse_recipe([{"prune": {"sparsity": {"fc1.weight": 0.5}}}])
    assert r.steps[0].config(PruneConfig).sparsity == {"fc1.weight": 0.5}


@pytest.mark.parametrize("raw,words", [
    ([{"prune": {}}, {"prunee": {}}], ["step 2", "unknown step 'prunee'", "prune-channels"]),
    ([{"prune": {"sparsty": 0.5}}], ["step 1 (prune)", "unknown key 'sparsty'", "valid keys:", "sparsity"]),
    ([{"kmeans": {"method": "linear"}}], ["step 1 (kmeans)", "unknown key 'method'"]),
    ([{"encode": {"bits": 3}}], ["step 1 (encode)", "unknown key 'bits'", "valid keys: none"]),
    ([{"prune": {"progress": False}}], ["unknown key 'progress'"]),
    ([{"quantize": {"bits": "four"}}], ["step 1 (quantize)", "bits must be int"]),
    ([{"prune": {"epochs": 1.5}}], ["step 1 (prune)", "epochs must be int"]),
    ([{"quantize": {"method": "fancy"}}], ["step 1 (quantize)", "method must be one of"]),
    ([{"prune-channels": {"epochs": 1}}], ["step 1 (prune-channels)"]),            # ratio or macs_target
    ([{"prune": {}, "kmeans": {}}], ["step 1", "one step name"]),
    ([{"distill": {"teacher": 3}}], ["step 1 (distill)", "teacher"]),
    ({"steps": [], "extra": 1}, ["unknown top-level key 'extra'"]),
])
def test_bad_steps_are_one_config_error_naming_step_and_key(raw, words):
    with pytest.raises(ConfigError) as e:
        parse_recipe(raw, "r.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("r.yaml")
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("text", ["steps: [prune: {", "just a string", "steps: []", "- 1\n- 2: [\n"])
def test_bad_files_are_one_format_or_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises((FormatError, ConfigError)) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_yaml_tags_are_never_executed(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("steps:\n  - !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(FormatError, match="not valid YAML"):
        load_recipe(path)


def test_valid_keys_leave_out_the_commands_own():
    assert "progress" not in valid_keys("prune") and "lr" in valid_keys("quantize")
    assert "teacher" in valid_keys("distill") and "temperature" in valid_keys("distill")


def _row(**kw) -> LedgerRow:
    base = dict(step="x", file_bytes=100, params=1000, nonzero_params=1000, macs=1000)
    return LedgerRow(**{**base, **kw})


def test_flags_zeros_but_nothing_removed_and_macs_down_latency_flat():
    before = _row()
    assert flags(_row(nonzero_params=200), before) == [ZEROS_FLAG]
    assert flags(_row(nonzero_params=200, params=500, macs=500, speedup=1.5), before) == []
    assert flags(_row(params=500, macs=500, nonzero_params=500, speedup=1.01), before) == [FLAT_FLAG]
    assert flags(_row(macs=950, speedup=1.0), before) == []        # a 5% MAC drop is not flagged
    assert flags(_row(macs=500), before) == []                     # not timed: no latency flag


def test_stored_rows_leave_out_measured_times_and_the_table_lists_flags():
    row = _row(step="1 prune", latency_ms=0.5, speedup=1.01, flags=[ZEROS_FLAG, FLAT_FLAG])
    stored = row.stored()
    assert "latency_ms" not in stored and "speedup" not in stored and stored["flags"] == [ZEROS_FLAG]
    text = format_ledger([_row(step="input"), row])
    assert "1 prune" in text and f"flag: 1 prune: {ZEROS_FLAG}" in text and "1.01x" in text
