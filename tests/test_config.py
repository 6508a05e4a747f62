"""params.yaml is validated once; every bad value is one error naming its key path."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, tiny_params

from transferlab.config import load_params, parse_params
from transferlab.errors import ConfigError


def test_shipped_params_parse_and_cover_every_strategy() -> None:
    params = load_params(ROOT / "params.yaml")
    assert {v.strategy for v in params.variants.values()} >= {"scratch", "reuse", "freeze", "cache", "unfreeze"}
    assert params.sources["source"].network.hidden_units == [300, 50, 50, 50, 50]
    assert params.sources["source"].data.classes == [0, 1, 2, 3, 4]  # the default comparison keeps its 0-4 source


def test_variant_overrides_apply_to_its_protocol_only() -> None:
    raw = tiny_params()
    raw["variants"]["freeze2"].update(stopping={"max_epochs": 9, "patience": 3}, grid=[{"name": "adam", "learning_rate": 0.5}])
    params = parse_params(raw)
    mine, theirs = params.protocol(params.variants["freeze2"]), params.protocol(params.variants["scratch"])
    assert mine.stopping.max_epochs == 9 and [o.label for o in mine.grid] == ["adam 0.5"]
    assert theirs.stopping.max_epochs == raw["transfer"]["stopping"]["max_epochs"]
    assert mine.budget() != theirs.budget()  # another tuning budget: the report will not rank them together
    assert theirs.budget() == params.protocol().budget()


def _variant(**fields):
    raw = tiny_params()
    raw["variants"]["freeze2"].update(fields)
    return raw


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (_variant(strategy="teleport"), "variants.freeze2.strategy", "teleport"),
        (_variant(strategy="lp_ft"), "variants.freeze2.frozen_layers", "trains every layer"),
        (_variant(strategy="lp_ft", frozen_layers=0, unfreeze={"frozen_epochs": 1, "unfreeze_top": 1}),
         "variants.freeze2.unfreeze", "only strategy unfreeze takes this"),
        (_variant(colour="red"), "variants.freeze2.colour", "unknown key"),
        (_variant(reuse_layers=4, frozen_layers=2), "variants.freeze2.reuse_layers", "4 > 3 hidden layers"),
        (_variant(frozen_layers=4), "variants.freeze2.frozen_layers", "4 > reuse_layers 3"),
        (_variant(stopping={"max_epochs": 0}), "variants.freeze2.stopping.max_epochs", "greater than 0"),
        (_variant(grid=[{"name": "sgd"}, {"name": "sgd"}]), "variants.freeze2.grid", "listed twice"),
        (tiny_params(transfer={"batch_size": -3}), "transfer.batch_size", "greater than 0"),
        (_variant(init_from="imagenet"), "variants.freeze2.init_from", "not configured"),
        (_variant(target="cifar"), "variants.freeze2.target", "not in targets"),
        (_variant(frozen_layers=0), "variants.freeze2.frozen_layers", "at least 1 frozen"),
        (_variant(strategy="unfreeze"), "variants.freeze2.unfreeze", "needs"),
        (_variant(unfreeze={"frozen_epochs": 1, "unfreeze_top": 1}), "variants.freeze2.unfreeze", "only strategy unfreeze"),
        (
            _variant(strategy="unfreeze", unfreeze={"frozen_epochs": 5, "unfreeze_top": 1}),
            "variants.freeze2.unfreeze.frozen_epochs",
            ">= stopping.max_epochs",
        ),
        (
            _variant(strategy="unfreeze", unfreeze={"frozen_epochs": 1, "unfreeze_top": 3}),
            "variants.freeze2.unfreeze.unfreeze_top",
            "3 > frozen_layers 2",
        ),
        (tiny_params(transfer={"stopping": {"max_epochs": 0}}), "transfer.stopping.max_epochs", "greater than 0"),
        (tiny_params(transfer={"grid": []}), "transfer.grid", "at least 1"),
        (tiny_params(transfer={"validation_fraction": 1.0}), "transfer.validation_fraction", "less than 1"),
        (tiny_params(colour=1), "colour", "unknown key"),
        (tiny_params(targets={"mnist": {"classes": [4, 5]}}), "targets.mnist.classes", "also classes of sources.source"),
        (tiny_params(sources={"source": {"data": {"dataset": "mnist_npz"}, "train": {"epochs": 1, "batch_size": 8}}}),
         "sources.source.data.path", "needs a path"),
    ],
)
def test_bad_params_name_the_key(raw, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert message.startswith(f"params.yaml: {key}: "), message
    assert reason in message
    assert "\n" not in message


def test_missing_and_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("variants: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def _pretrain(**fields):
    entry = {"method": "auxiliary_ranking", "hidden_units": [8], "target": "mnist",
             "train": {"epochs": 1, "batch_size": 4}, "corruptions": [{"kind": "noise", "amount": 0.2}]}
    entry.update(fields)
    return tiny_params(pretrain={"rank": entry})


@pytest.mark.parametrize(
    ("raw", "key", "reason"),
    [
        (_pretrain(method="autoenc"), "pretrain.rank.method", "'autoenc' is not one of autoencoder, rbm"),
        (_pretrain(corruptions=[{"kind": "zap", "amount": 0.1}]), "pretrain.rank.corruptions.0.kind", "'zap'"),
        (_pretrain(margin=0), "pretrain.rank.margin", "greater than 0"),
        (_pretrain(margin=-1.5), "pretrain.rank.margin", "greater than 0"),
        (_pretrain(hidden_units=[8, 8, 8, 8]), "pretrain.rank.hidden_units", "depth 4 > 3 hidden layers"),
        (_pretrain(target="other"), "pretrain.rank.target", "not in targets"),
    ],
)
def test_bad_pretraining_params_name_the_key(raw, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    assert str(caught.value).startswith(f"params.yaml: {key}: ") and reason in str(caught.value), str(caught.value)


def test_variant_may_start_from_a_configured_pretraining_only() -> None:
    raw = _pretrain()
    raw["variants"]["freeze2"].update(init_from="rank", reuse_layers=1, frozen_layers=1)
    assert parse_params(raw).init_depth("rank") == 1
    del raw["pretrain"]["rank"]
    with pytest.raises(ConfigError, match="variants.freeze2.init_from: 'rank' is not configured"):
        parse_params(raw)
