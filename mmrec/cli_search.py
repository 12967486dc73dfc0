"""`mmrec search`: a text or image query against a model's joint space, on the command line.

A leaf of the CLI (registered by mmrec/cli.py); the work is mmrec/search.py, the same code the
API's `/search` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, handle_errors, load_context


def register(app: typer.Typer) -> None:
    """Add `search` to `app`."""

    @app.command("search")
    @handle_errors
    def search_command(
        dataset: DatasetOpt,
        query: Annotated[str | None, typer.Argument(help="Text to search for (or give --image).")] = None,
        image: Annotated[
            Path | None, typer.Option("--image", help="Search with this image file instead of text.")
        ] = None,
        k: Annotated[int, typer.Option("--k", min=1, max=1000, help="How many items.")] = 10,
        target: Annotated[
            str, typer.Option("--target", help="Match items by: all (their modalities, averaged), text or image.")
        ] = "all",
        alias: Annotated[str, typer.Option("--alias", help="Registry alias of the model to search with.")] = "champion",
        model_dir: Annotated[
            Path | None,
            typer.Option(
                "--model", help="A saved model folder (e.g. data/<name>/models/two_tower) instead of the registry."
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Items for a text query or an image, ranked in the model's learned text-image space.

        The query is embedded by the dataset's own encoder and mapped through the model's
        cross-modal projection (a two_tower trained with text and image): a text query finds
        items by their pictures too, not only by their own text.
        """
        import json

        from mmrec.errors import ConfigError
        from mmrec.search import IMAGE_TYPES, QueryEncoders, check_text_query, decode_query_image, search

        if (query is None) == (image is None):
            raise ConfigError("give a text query or --image PATH (one of them)")
        ctx = load_context(dataset, root, params, workspace)
        if model_dir is not None:
            from mmrec.models import load_model

            model = load_model(model_dir)
            source = str(model_dir)
        else:
            from mmrec.tracking.registry import load_champion

            model, info = load_champion(ctx, alias=alias)
            source = f"{info['registered_model']} v{info['version']} ({alias})"
        encoders = QueryEncoders(ctx.params.extract)
        if image is not None:
            if not image.is_file():
                raise ConfigError(f"{image}: no such image file")
            suffix = image.suffix.lower().lstrip(".")
            content_type = {"jpg": "image/jpeg", "tif": "image/tiff"}.get(suffix, f"image/{suffix}")
            if content_type not in IMAGE_TYPES:
                raise ConfigError(f"{image}: unsupported image type {suffix!r}; use one of {sorted(IMAGE_TYPES)}")
            img = decode_query_image(
                image.read_bytes(), content_type, 64 * 1024 * 1024, ctx.params.extract.image.max_pixels
            )
            hits = search(model, encoders, k, image=img, target=target)
        else:
            hits = search(model, encoders, k, text=check_text_query(query), target=target)
        titles = _titles(ctx)
        rows = [{"rank": r, **h.to_dict(), "title": titles.get(h.item_id)} for r, h in enumerate(hits, 1)]
        if as_json:
            typer.echo(json.dumps({"model": source, "target": target, "items": rows}, indent=2))
            return
        typer.echo(f"# {model.name} from {source}; matched by {target}")
        for row in rows:
            matched = " ".join(f"{m}={v:.3f}" for m, v in row["matched"].items())
            typer.echo(f"{row['rank']:>3}  {row['score']:.3f}  {row['item_id']:<12} {row['title'] or ''}  [{matched}]")


def _titles(ctx: object) -> dict[str, str]:
    """item id -> display title from the warehouse (empty when it has none)."""
    import pandas as pd

    path = ctx.paths.warehouse / "items.parquet"  # type: ignore[attr-defined]
    if not path.is_file():
        return {}
    cols = pd.read_parquet(path).columns
    col = "text_title" if "text_title" in cols else ("text" if "text" in cols else None)
    if col is None:
        return {}
    items = pd.read_parquet(path, columns=["item_id", col])
    return {
        str(i): str(t).splitlines()[0][:120]
        for i, t in zip(items["item_id"], items[col], strict=True)
        if isinstance(t, str)
    }
