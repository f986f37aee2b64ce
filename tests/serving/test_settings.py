"""One settings source: the bundle's recorded settings, then explicit overrides, in ``from_bundle`` and the CLI."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from rectorch.serving import BundleError, Recommender, RecommendSettings, ServeSettings, read_manifest
from rectorch.serving.cli import main, parse_settings
from tests.serving.conftest import TUNED, rewrite_manifest

HISTORY = ["i0", "i3", "i6"]  # three items of category cluster 0


def categories(recommender: Recommender) -> set[int]:
    return {int(i[1:]) % 3 for i in recommender.recommend(HISTORY, k=3).items}


@pytest.fixture
def old_bundle(bundle: Path, tmp_path: Path) -> Path:
    """A bundle written before manifests recorded serving settings (its ``serving`` key removed)."""
    copy = Path(shutil.copytree(bundle, tmp_path / "old"))
    raw = json.loads((copy / "manifest.json").read_text())
    del raw["serving"]
    rewrite_manifest(copy, raw)
    return copy


def test_the_bundle_records_every_setting_it_was_written_with(bundle: Path, tuned_bundle: Path) -> None:
    assert read_manifest(tuned_bundle).serving == {"recommend": dataclasses.asdict(TUNED)}
    assert read_manifest(bundle).serving == {"recommend": dataclasses.asdict(RecommendSettings())}


@pytest.mark.parametrize("which", ["bundle", "tuned_bundle", "old_bundle"])
def test_from_bundle_and_the_cli_build_the_same_settings(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    expected = TUNED if which == "tuned_bundle" else RecommendSettings()
    assert Recommender.from_bundle(path).settings == expected
    # the CLI: the dataclass defaults for everything else, no config file read implicitly
    assert parse_settings([f"bundle={path}"]) == ServeSettings(bundle=str(path), recommend=expected)


def test_recorded_settings_are_served_by_default(bundle: Path, tuned_bundle: Path) -> None:
    assert categories(Recommender.from_bundle(bundle)) == {0}
    assert categories(Recommender.from_bundle(tuned_bundle)) == {0, 1, 2}  # recorded MMR over categories
    served = Recommender.from_bundle(tuned_bundle, parse_settings([f"bundle={tuned_bundle}"]).recommend)
    assert categories(served) == {0, 1, 2}
    with pytest.raises(ValueError, match="k must be between 1 and 60"):
        Recommender.from_bundle(tuned_bundle).recommend(HISTORY, k=61)


def test_an_override_beats_the_recorded_value(tuned_bundle: Path) -> None:
    overridden = Recommender.from_bundle(tuned_bundle, {"mmr_lambda": 1.0, "max_k": 5})
    assert overridden.settings == dataclasses.replace(TUNED, mmr_lambda=1.0, max_k=5)
    assert categories(overridden) == {0}
    cli = parse_settings([f"bundle={tuned_bundle}", "recommend.mmr_lambda=1", "serve.recommend.max_k=5", "port=9001"])
    assert cli.recommend == overridden.settings and cli.port == 9001
    exact = RecommendSettings(max_k=5)  # a full RecommendSettings replaces the recorded values
    assert Recommender.from_bundle(tuned_bundle, exact).settings == exact


def test_a_settings_file_sits_between_the_bundle_and_the_command_line(tuned_bundle: Path, tmp_path: Path) -> None:
    file = tmp_path / "serve.yaml"
    file.write_text(f"bundle: {tuned_bundle}\nport: 9002\nrecommend:\n  mmr_lambda: 0.5\n  seed: 11\n")
    settings = parse_settings(["--settings", str(file), "recommend.seed=12"])
    assert (settings.bundle, settings.port) == (str(tuned_bundle), 9002)
    assert settings.recommend == dataclasses.replace(TUNED, mmr_lambda=0.5, seed=12)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("recommend.mmr_lamda=0.5", r"unknown setting 'recommend\.mmr_lamda'"),
        ("prot=9000", "unknown setting 'prot'"),
        ("recommend.mmr_lambda=3", r"mmr_lambda must lie in \[0, 1\], got 3"),
        ("recommend.mmr_lambda=abc", "setting 'mmr_lambda' must be float, got 'abc'"),
        ("port=http", "setting 'port' must be int"),
        ("recommend=7", "'recommend' must be a mapping"),
        ("bundle", "key=value"),
        ("max_body_bytes=10", r"max_body_bytes must lie in \[1024, 1073741824\], got 10"),
        ("max_body_bytes=true", "setting 'max_body_bytes' must be int, got True"),
        ("manifest_sha256=abc", "manifest_sha256 must be 64 lowercase hex digits, got 'abc'"),
        ("log_level=loud", "log_level must be one of"),
        ("threads=0", "threads in 1..256"),
    ],
)
def test_bad_cli_settings_raise_a_value_error_naming_them(tuned_bundle: Path, argument: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings([f"bundle={tuned_bundle}", argument])


def test_bad_overrides_and_files_name_the_key_and_the_file(tuned_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown setting 'mmr_lamda'"):
        Recommender.from_bundle(tuned_bundle, {"mmr_lamda": 0.5})
    file = tmp_path / "bad.yaml"
    file.write_text("recommend:\n  explore: 0.1\n")
    with pytest.raises(ValueError, match=rf"settings file {file}: unknown setting 'recommend\.explore'"):
        parse_settings([f"bundle={tuned_bundle}", "--settings", str(file)])
    with pytest.raises(ValueError, match="missing bundle"):
        parse_settings(["port=9000"])
    with pytest.raises(ValueError, match="not found"):
        parse_settings([f"bundle={tuned_bundle}", "--settings", str(tmp_path / "absent.yaml")])


def test_malformed_recorded_settings_are_a_bundle_error(tuned_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tuned_bundle, tmp_path / "copy"))
    raw = json.loads((copy / "manifest.json").read_text())
    raw["serving"]["recommend"]["mmr_lambdaa"] = 0.5
    rewrite_manifest(copy, raw)
    with pytest.raises(BundleError, match="recorded settings: unknown setting 'mmr_lambdaa'"):
        Recommender.from_bundle(copy)
    with pytest.raises(BundleError, match="mmr_lambdaa"):
        parse_settings([f"bundle={copy}"])


def test_the_cli_reports_bad_settings_in_one_line(tuned_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([f"bundle={tuned_bundle}", "recommend.nope=1"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("rectorch-serve: error: ") and "'recommend.nope'" in error and error.count("\n") == 1
