"""Failure corpus, bundles: each bad bundle is refused with one BundleError line naming the file and key.

Every case of :mod:`tests.failures.bundle_cases` is loaded twice, through ``Recommender.from_bundle`` and
through ``rectorch-serve`` (exit code 2, one ``rectorch-serve: error:`` line); the bundle directory must be
byte-for-byte unchanged afterwards. The writer cases check that nothing but a bundle is ever replaced.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rectorch.serving import BundleError, Manifest, Recommender
from rectorch.serving.cli import main
from tests.failures.bundle_cases import CASES, BundleCase, attempt, snapshot
from tests.serving.conftest import build_bundle, rewrite_manifest

MAX_MESSAGE = 500
MANIFEST_KEYS = [field.name for field in dataclasses.fields(Manifest)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("pristine") / "tiny")


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "bundle"))


def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CASES) >= 70 and len({case.id for case in CASES}) == len(CASES)


def test_the_pristine_bundle_loads_and_answers(copy: Path) -> None:
    outcome = attempt(copy, Recommender.from_bundle)
    assert outcome.error is None and not outcome.request_error and not outcome.changed


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_bad_bundle_is_one_clear_line(case: BundleCase, copy: Path, capsys: pytest.CaptureFixture) -> None:
    case.mutate(copy)
    outcome = attempt(copy, Recommender.from_bundle)
    assert outcome.error is not None, f"accepted; a request then gave {outcome.request_error or 'an answer'}"
    assert isinstance(outcome.error, BundleError), f"{type(outcome.error).__name__}: {outcome.message[:300]}"
    message = outcome.message
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message[:1000]
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert not outcome.changed, f"the load changed {outcome.changed}"

    before = snapshot(copy)
    with pytest.raises(SystemExit) as stopped:
        main([f"bundle={copy}", "port=1"])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.startswith("rectorch-serve: error: ") and error.count("\n") == 1, error
    assert all(fragment in error for fragment in case.fragments), error
    assert snapshot(copy) == before


def test_a_bundle_path_that_is_a_file_or_absent(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "absent"):
        with pytest.raises(BundleError, match=rf"{path.name} is not a bundle: manifest\.json not found"):
            Recommender.from_bundle(path)


def test_a_bundle_reached_through_a_link_loads(pristine: Path, tmp_path: Path) -> None:
    """The directory may be a link (``current -> v3``); only the files inside may not."""
    (tmp_path / "current").symlink_to(pristine)
    assert Recommender.from_bundle(tmp_path / "current").manifest.num_items == 60


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        ({"notes.txt": b"mine"}, "it exists and is not a bundle"),
        ({"manifest.json.bak": b"{}", "data.csv": b"a,b"}, "it exists and is not a bundle"),
        ({"manifest.json/": b""}, "it exists and is not a bundle"),
    ],
)
def test_the_writer_never_replaces_a_directory_that_is_not_a_bundle(
    tmp_path: Path, existing: dict[str, bytes], message: str
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    for name, data in existing.items():
        if name.endswith("/"):
            (target / name).mkdir()
        else:
            (target / name).write_bytes(data)
    before = snapshot(target)
    with pytest.raises(BundleError, match=message):
        build_bundle(target)
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_writer_refuses_a_file_and_a_link(pristine: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(BundleError, match="is not a directory"):
        build_bundle(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"
    (tmp_path / "link").symlink_to(pristine)
    before = snapshot(pristine)
    with pytest.raises(BundleError, match="is a symbolic link"):
        build_bundle(tmp_path / "link")
    assert snapshot(pristine) == before


def test_a_failed_write_leaves_the_old_bundle_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rectorch.serving.bundle as bundle

    target = build_bundle(tmp_path / "b")
    before = snapshot(target)

    def failing(path: Path, data: bytes) -> None:
        if path.name == "items.npz":
            raise OSError(28, "No space left on device")
        path.write_bytes(data)

    monkeypatch.setattr(bundle, "write_file", failing)
    with pytest.raises(OSError, match="No space left"):
        build_bundle(target)
    assert snapshot(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


MANIFEST_PATHS = [
    *[(key,) for key in MANIFEST_KEYS],
    ("index", "file"),
    ("index", "search_params"),
    ("inputs", 0),
    ("inputs", 0, "name"),
    ("inputs", 0, "dtype"),
    ("inputs", 0, "shape"),
    ("inputs", 0, "shape", 1),
    ("inputs", 0, "max_len"),
    ("serving", "recommend"),
    ("serving", "recommend", "candidates"),
    ("files", "items.npz"),
    ("encoders", "fp32"),
    ("categories", 1),
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MANIFEST_PATHS), JSON)
def test_any_value_at_any_manifest_key_loads_or_is_one_bundle_error(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, path: tuple, value: object
) -> None:
    copy = Path(shutil.copytree(pristine, tmp_path_factory.mktemp("generated") / "bundle"))
    raw = json.loads((copy / "manifest.json").read_text())
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    rewrite_manifest(copy, raw)
    before = snapshot(copy)
    try:
        Recommender.from_bundle(copy).recommend(["i0"], k=3)
    except BundleError as error:
        assert "\n" not in str(error) and len(str(error)) <= MAX_MESSAGE, str(error)[:1000]
    assert snapshot(copy) == before
    shutil.rmtree(copy.parent)
