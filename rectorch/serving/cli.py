"""``rectorch-serve bundle=DIR [--settings FILE] [key=value ...]``: the HTTP service.

Settings are layered, later wins: the :class:`ServeSettings` defaults, the settings the bundle records
(``manifest.json`` → ``serving``), the ``--settings`` YAML file, then ``key=value`` overrides
(``port=8001``, ``recommend.mmr_lambda=0.8``; Hydra-style, without Hydra: serving never imports it).
The session store comes from ``session_store`` (``session_store=redis://127.0.0.1:6379/0``, or
``serve.session_store=...``); it keeps ``session_max_events`` events per user (default: the newest items
the bundle's encoder reads). The strategy layer comes from ``strategy`` (``strategy.mode=thompson``, arms in
the YAML file: ``strategy: {mode: thompson, arms: [{name: control}, {name: explore, settings:
{explore_share: 0.1}}, {name: pop, bundle: export/pop}], log_dir: logs/impressions}``); it shares the store.
"""

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from rectorch.serving.manifest import read_manifest
from rectorch.serving.settings import ServeSettings, merge, parse_overrides, read_settings_file, serve_settings

USAGE = "rectorch-serve bundle=DIR [--settings FILE] [key=value ...]"
DESCRIPTION = (
    "Serve a bundle over HTTP. Settings, later wins: the defaults, the settings the bundle records, "
    "the --settings YAML file, then key=value overrides (port=8001, recommend.mmr_lambda=0.8)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rectorch-serve", usage=USAGE, description=DESCRIPTION)
    parser.add_argument("--settings", metavar="FILE", help="YAML laid out like ServeSettings (recommend: {...})")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="bundle=DIR, port=8001, recommend.k=v")
    return parser


def parse_settings(argv: Sequence[str]) -> ServeSettings:
    """Build the settings for ``argv``; unknown keys, bad values and a missing bundle raise ``ValueError``."""
    args = _parser().parse_intermixed_args(list(argv))
    sources = {"command line": parse_overrides(args.overrides)}
    if args.settings:
        sources = {f"settings file {args.settings}": read_settings_file(args.settings), **sources}
    for where, layer in sources.items():
        serve_settings(None, layer, where)  # each source alone: an unknown key or bad value names its source
    tree: dict = {}
    for layer in sources.values():
        tree = merge(tree, layer)
    bundle = tree.get("bundle")
    if bundle in (None, "", ServeSettings.bundle):
        raise ValueError("missing bundle=<bundle directory>")
    recorded = read_manifest(str(bundle), verify=False).serving.get("recommend")
    return serve_settings(recorded, {**tree, "bundle": str(bundle)}, "settings")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the settings, load the bundle, serve until interrupted."""
    import uvicorn

    from rectorch.serving.app import create_app
    from rectorch.serving.recommender import Recommender
    from rectorch.serving.sessions import history_length, open_store
    from rectorch.serving.strategy import build_arms, build_layer

    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
        recommender = Recommender.from_bundle(
            settings.bundle, settings.recommend, settings.precision, settings.threads, settings.manifest_sha256
        )
        max_events = settings.session_max_events or history_length(recommender.manifest.inputs)
        store = open_store(settings.session_store, max_events, settings.session_ttl_seconds)
        layer = arms = None
        if settings.strategy.mode != "off":
            arms = build_arms(settings.strategy, recommender, settings.precision, settings.threads)
            layer = build_layer(settings.strategy, store)
    except (ValueError, OSError) as error:  # BundleError is a ValueError
        print(f"rectorch-serve: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    shown = {**dataclasses.asdict(settings), "session_store": store.name}  # no password printed
    print(f"rectorch-serve: {shown}", file=sys.stderr)
    try:
        uvicorn.run(
            create_app(recommender, settings.max_body_bytes, store, settings.events_max_batch, layer, arms),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            server_header=False,
        )
    finally:
        store.close()


if __name__ == "__main__":
    main()
