"""Builds serving states from a trained pipeline: MLflow champion, item indexes, online store.

`ChampionSource(ctx)` is the `StateSource` behind `mmrec serve`: its `version()` asks the
MLflow registry which version the `champion` alias points at (one query, no download), and
`load()` builds a complete `ServingState` for it:
- the model through `mmrec.tracking.registry.load_champion` (the same path as the nightly job),
- the catalogue from the warehouse (titles, media, histories),
- the precomputed top-K reader over the Feast online store (`mmrec.feast.online.OnlineFeatures`),
- one `mmrec.retrieval.ItemIndex` per embedding view the online store holds (text, image,
  audio, video, fused),
- `mmrec.explain.explain` for the explain endpoint.
Item indexes depend on the exported embeddings only, so they are reused across model reloads
while those tables are unchanged. Loads run one at a time (StateHolder's lock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrec.errors import ModelError
from mmrec.serve.state import ServingState, SimilarIndex

if TYPE_CHECKING:
    from mmrec.retrieval import ItemIndex
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

FUSED = "fused"


class ModalityIndex:
    """`SimilarIndex` over an `ItemIndex`: None for items without a vector in this space.

    An item's neighbours are a pure function of the index, which never changes after it is
    built (a changed embedding table builds a new index, `ChampionSource.indexes`), so each
    answer is kept: a repeated `GET /items/{id}/similar` costs a dict look-up instead of a
    scan of the catalogue (about half the request's CPU on the synthetic shop,
    benchmarks/serving.py). At most `max_cached` answers are kept; when full, the memo starts
    over, so memory stays bounded whatever ids and k clients send.
    """

    def __init__(self, index: ItemIndex, max_cached: int = 50_000) -> None:
        self.index = index
        self.max_cached = max_cached
        self._memo: dict[tuple[str, int], list[tuple[str, float]] | None] = {}

    def similar(self, item_id: str, k: int) -> list[tuple[str, float]] | None:
        key = (item_id, k)
        try:
            return self._memo[key]
        except KeyError:
            pass
        if item_id not in self.index or not self.index.has_vector(item_id):
            found = None
        else:
            found = self.index.similar(item_id, k)[0]
        if len(self._memo) >= self.max_cached:
            self._memo = {}  # rebinding is atomic under the GIL: a concurrent reader sees either dict
        self._memo[key] = found
        return found


def build_indexes(views: dict[str, tuple[Sequence[str], np.ndarray]]) -> dict[str, SimilarIndex]:
    """One exact/ANN cosine index per embedding view (text, image, ..., fused) over centred vectors.

    Args:
        views: view -> (item ids that have a vector, (n, d) float32 vectors).

    Centring (what content_knn does) removes the direction every vector of an encoder shares;
    raw cosines would all sit near 0.7 and rank by noise.
    """
    from mmrec.models.item_features import centred_unit
    from mmrec.retrieval import ItemIndex

    out: dict[str, SimilarIndex] = {}
    for view, (ids, matrix) in sorted(views.items()):
        if not len(ids):
            continue
        unit = centred_unit(np.asarray(matrix, dtype=np.float32), np.ones(len(ids), dtype=bool))
        out[view] = ModalityIndex(ItemIndex.build([str(i) for i in ids], unit, metric="cosine"))
    return out


class Precomputed(list):
    """(item_id, score) pairs best first, plus the registry version of the model that wrote them."""

    model_version: str | None = None


class OnlineRecs:
    """`RecsReader` over the Feast online store's `user_recommendations` view."""

    def __init__(self, online: Any, table: Path | None = None) -> None:
        self.online = online
        self.table = table  # the exported nightly table the online store was materialised from
        self._rows: tuple[tuple[int, int], int] | None = None  # (mtime_ns, size) -> rows

    def available(self) -> bool:
        """Whether a nightly list exists to serve from (what /ready reports as `precomputed`).

        The pipeline materialises the store before any nightly run, so the view exists but is
        empty until `mmrec recommend` (or the nightly flow) has run; then users get `source:
        model`, and /ready must say so. Read from the exported table (re-read when it changes).
        """
        if self.table is None:
            return True
        try:
            st = self.table.stat()
        except OSError:
            return False
        key = (st.st_mtime_ns, st.st_size)
        if self._rows is None or self._rows[0] != key:
            import pyarrow.parquet as pq

            try:
                self._rows = (key, int(pq.ParquetFile(self.table).metadata.num_rows))
            except Exception:  # noqa: BLE001 - unreadable while being replaced: not available now
                return False
        return self._rows[1] > 0

    def check(self) -> None:
        """Raise unless the store answers now (for /ready)."""
        self.online.ping()

    def get(self, user_id: str) -> list[tuple[str, float]] | None:
        rec = self.online.recommendations([user_id])[0]
        if rec is None or not rec.item_ids:
            return None
        out = Precomputed((str(i), float(s)) for i, s in zip(rec.item_ids, rec.scores.tolist(), strict=False))
        out.model_version = rec.model_version or None
        return out


class ChampionSource:
    """States for the dataset's MLflow champion (see the module docstring).

    Args:
        ctx: the dataset, params and workspace (as every stage gets them).
        alias: registry alias to serve.
        profile: Feast profile (`sqlite`, `redis`); None: `features.profile` of params.yaml.
    """

    def __init__(self, ctx: StageContext, alias: str = "champion", profile: str | None = None) -> None:
        self.ctx = ctx
        self.alias = alias
        self.profile = profile
        self._online: Any = None
        self._index_cache: tuple[tuple[Any, ...], dict[str, SimilarIndex]] | None = None

    def version(self) -> str:
        from mmrec.tracking.registry import alias_version

        version = alias_version(self.ctx, self.alias)
        if version is None:
            spec = self.ctx.spec.spec_path or "PATH/dataset.yaml"
            raise ModelError(
                f"no {self.alias!r} model is registered for {self.ctx.spec.name!r}; run `mmrec pipeline --dataset {spec}`"
            )
        return version

    def stamp(self) -> str | None:
        """Changes when a user is forgotten (the forget list is rewritten): reload the same version."""
        from mmrec.privacy.forget_list import privacy_dir

        try:
            st = (privacy_dir(self.ctx.paths) / "forget.json").stat()
        except OSError:
            return None
        return f"{st.st_mtime_ns}:{st.st_size}"

    def online(self) -> Any:
        """A fresh Feast online reader for each load: the registry is read again and the store
        reopened, so `POST /admin/reload?force=true` recovers from a replaced or repaired store
        (the state being replaced keeps its own reader until its requests finish)."""
        from mmrec.feast.online import OnlineFeatures

        self._online = OnlineFeatures.from_context(self.ctx, self.profile)
        return self._online

    def load(self) -> ServingState:
        from mmrec.explain import explain
        from mmrec.provenance import check_split, current_split_hash
        from mmrec.serve.catalog import load_catalog
        from mmrec.tracking.registry import load_champion

        model, info = load_champion(self.ctx, alias=self.alias)
        # A champion trained on another split would mask the wrong "seen" items: say so, refuse.
        check_split(
            model,
            current_split_hash(self.ctx.paths, self.ctx.params.split.kind),
            f"{info['registered_model']} v{info['version']} ({self.alias})",
            "re-run `mmrec pipeline` (train + register on the current split)",
        )
        catalog = load_catalog(self.ctx.paths, self.ctx.spec.root_path, self.ctx.params.extract.image.max_pixels)
        online = self.online()
        online.ping()
        return ServingState(
            version=str(info["version"]),
            catalog=catalog,
            model=model,
            recs=OnlineRecs(online, self._recs_table()),
            similar=self.indexes(online),
            explainer=explain,
            info={
                "registered_model": info["registered_model"],
                "alias": self.alias,
                "run_id": info["run_id"],
                "online_store": online.profile,
            },
        )

    def _recs_table(self) -> Path:
        from mmrec.feast.store import table_path

        return table_path(self.ctx.paths, "user_recommendations")

    def indexes(self, online: Any) -> dict[str, SimilarIndex]:
        """Item indexes over the online store's embeddings, rebuilt only when an exported table changed."""
        from mmrec.feast.online import EMBEDDING_VIEWS
        from mmrec.feast.store import table_path
        from mmrec.serve.service import MODALITY_CHOICES

        files = [table_path(self.ctx.paths, EMBEDDING_VIEWS[v]) for v in MODALITY_CHOICES]
        key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())
        if self._index_cache is not None and self._index_cache[0] == key:
            return self._index_cache[1]
        views = {v: online.item_embedding_matrix(v) for v in online.views() if v in MODALITY_CHOICES}
        built = build_indexes(views)
        self._index_cache = (key, built)
        log.info("item indexes built from the online store: %s", {v: len(ids) for v, (ids, _) in views.items()})
        return built
