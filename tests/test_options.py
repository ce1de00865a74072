"""Command-line options from config dataclasses (sdft_core/options.py): one syntax for every entry point."""

import argparse
import dataclasses

import pytest

from sdft_core.config import TrainConfig
from sdft_core.options import add_field_options, config_from_argv, field_docs


@dataclasses.dataclass
class Settings:
    size: int | None = 10
    """How many (none: all)."""
    rate: float = 0.5
    flag: bool = False
    names: list[str] | None = None
    label: str = "x"


def test_every_kind_of_value_has_one_syntax():
    settings = config_from_argv(Settings, ["--size", "none", "--rate", "2", "--flag", "yes", "--names", "a", "b"])
    assert settings == Settings(size=None, rate=2.0, flag=True, names=["a", "b"], label="x")
    assert config_from_argv(Settings, []) == Settings()
    assert config_from_argv(Settings, ["--flag", "0"]).flag is False
    with pytest.raises(SystemExit):
        config_from_argv(Settings, ["--flag", "maybe"])
    with pytest.raises(SystemExit):
        config_from_argv(Settings, ["--rate", "none"])  # not optional


@pytest.mark.parametrize("argv, error", [(["--rate", "abc"], "argument --rate: expected a float, got 'abc'"),
                                         (["--size", "ten"], "argument --size: expected an integer or none, got 'ten'"),
                                         (["--flag", "maybe"], "argument --flag: expected true or false, got 'maybe'")])
def test_a_bad_value_names_the_type_expected(argv, error, capsys):
    with pytest.raises(SystemExit):
        config_from_argv(Settings, argv)
    assert capsys.readouterr().err.strip().endswith(error)


def test_a_bad_training_value_names_the_type_expected(capsys):
    from experiments.train_run import main

    with pytest.raises(SystemExit):
        main(["--task", "knowledge", "--output-dir", "unused", "--learning-rate", "abc"])
    assert capsys.readouterr().err.strip().endswith("argument --learning-rate: expected a float, got 'abc'")


def test_given_only_leaves_what_the_command_line_did_not_give_as_none():
    parser = argparse.ArgumentParser()
    add_field_options(parser, TrainConfig, skip=("extra",), given_only=True)
    given = {k: v for k, v in vars(parser.parse_args(["--learning-rate", "3e-4", "--lora-target-modules", "q_proj",
                                                      "v_proj", "--importance-sampling", "true"])).items()
             if v is not None}
    assert given == {"learning_rate": 3e-4, "lora_target_modules": ["q_proj", "v_proj"], "importance_sampling": True}


def test_the_help_is_the_docstring_under_each_field():
    assert field_docs(Settings) == {"size": "How many (none: all)."}
    assert field_docs(TrainConfig)["learning_rate"]
