"""``rectorch-serve bundle=... [port=8000] [recommend.mmr_lambda=0.8]``: the HTTP service.

Settings come from the :class:`ServeSettings` defaults, then ``conf/serve.yaml`` when the project
tree is present, then ``key=value`` overrides (Hydra-style, without Hydra: serving never imports it).
"""

import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from rectorch.serving.manifest import BundleError
from rectorch.serving.settings import RecommendSettings, ServeSettings

DEFAULTS_FILE = Path(__file__).resolve().parents[2] / "conf" / "serve.yaml"


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def parse_settings(argv: list[str], defaults_file: Path | None = DEFAULTS_FILE) -> ServeSettings:
    """Build settings from ``conf/serve.yaml`` and ``key=value`` arguments; unknown keys raise ``ValueError``."""
    tree: dict[str, Any] = {}
    if defaults_file is not None and defaults_file.is_file():
        tree = yaml.safe_load(defaults_file.read_text()) or {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep or not key:
            raise ValueError(f"arguments are key=value overrides, got {arg!r}")
        _assign(tree, key.removeprefix("serve."), yaml.safe_load(raw) if raw else "")
    recommend = tree.pop("recommend", {}) or {}
    try:
        settings = ServeSettings(**tree, recommend=RecommendSettings(**recommend))
    except TypeError as error:
        raise ValueError(f"unknown setting: {error}") from error
    if settings.bundle == ServeSettings.bundle:
        raise ValueError("missing bundle=<bundle directory>")
    return settings


def main(argv: list[str] | None = None) -> None:
    """Parse the settings, load the bundle, serve until interrupted."""
    import uvicorn

    from rectorch.serving.app import create_app
    from rectorch.serving.recommender import Recommender

    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
        recommender = Recommender.from_bundle(settings.bundle, settings.recommend, settings.precision, settings.threads)
    except (ValueError, BundleError, FileNotFoundError) as error:
        print(f"rectorch-serve: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"rectorch-serve: {dataclasses.asdict(settings)}", file=sys.stderr)
    uvicorn.run(
        create_app(recommender), host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False
    )


if __name__ == "__main__":
    main()
