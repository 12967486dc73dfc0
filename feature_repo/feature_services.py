"""Feature services: one per registered model version, `model_v<N>` (N = MLflow version).

Versions are not hard-coded: `mmrec.feast.export.export_tables` writes `models.json` beside the
exported tables, listing every version of the registered model `mmrec-<dataset>` with its model
name, aliases and the feature views it reads at serving time, e.g.

    {"registered_model": "mmrec-synth",
     "versions": [{"version": "3", "model": "bpr", "aliases": ["champion"],
                   "views": ["item_stats", "user_stats", "user_embedding", ...]}]}

so `feast apply` after each export adds the service of a newly registered version. A view
name that this repo does not define is an error (the export and the repo disagree).
"""

import json
from pathlib import Path

import feature_views
from data_sources import DATA
from feast import FeatureService

# beside the tables folder; a relative DATA is relative to this repo (as Feast reads sources)
MODELS_FILE = (DATA if DATA.is_absolute() else Path(__file__).resolve().parent / DATA).parent / "models.json"


def _services(path):
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for entry in manifest.get("versions", []):
        views = []
        for name in entry["views"]:
            view = getattr(feature_views, name, None)
            if view is None:
                raise ValueError(f"{path}: version {entry['version']} uses unknown feature view {name!r}")
            views.append(view)
        name = f"model_v{entry['version']}"
        out[name] = FeatureService(
            name=name,
            features=views,
            description=f"{manifest.get('registered_model', 'model')} version {entry['version']} ({entry['model']})",
            tags={
                "registered_model": str(manifest.get("registered_model", "")),
                "version": str(entry["version"]),
                "model": str(entry["model"]),
                "aliases": ",".join(entry.get("aliases", [])),
            },
        )
    return out


# Feast collects module-level objects: bind each service to a module attribute.
globals().update(_services(MODELS_FILE))
