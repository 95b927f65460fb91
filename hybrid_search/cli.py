"""The `hybrid-search` command line: ingest, annotate, search, evaluate, serve.

Core errors (HybridSearchError) become one-line messages and exit status 1 here; nothing in
the core prints or exits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .exceptions import HybridSearchError, QueryError
from .settings import Settings, load_settings

__all__ = ["main"]


class Context:
    """Options shared by every command."""

    def __init__(self, data_dir: str | None, config: str | None) -> None:
        self.data_dir = data_dir
        self.config = config

    def settings(self, **overrides: Any) -> Settings:
        """Resolved settings, with command-line overrides."""
        return load_settings(config_file=self.config, data_dir=self.data_dir, overrides=overrides)

    @contextmanager
    def collection(self, **overrides: Any) -> Iterator[Any]:
        """The open collection, closed afterwards."""
        from .collection import Collection

        col = Collection(self.settings(**overrides))
        try:
            yield col
        finally:
            col.close()


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except HybridSearchError as e:
        raise click.ClickException(str(e)) from None


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="img", file=sys.stderr, disable=None,
                       dynamic_ncols=True)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="HYBRID_SEARCH_DATA_DIR",
              help="Data directory (SQLite file, Whoosh index, derived files).")
@click.option("--config", type=click.Path(dir_okay=False), envvar="HYBRID_SEARCH_CONFIG",
              help="A TOML file of settings (see config/default.toml).")
@click.version_option(package_name="hybrid-search")
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, config: str | None) -> None:
    """Search a photo collection by keywords, by a query image, or both."""
    ctx.obj = Context(data_dir, config)


@main.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--annotations", "annotations", type=click.Path(dir_okay=False),
              help="CSV (file,title,description,tags) or JSON lines with annotations.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def ingest_cmd(obj: Context, paths: tuple[str, ...], annotations: str | None,
               as_json: bool) -> None:
    """Add photos (files or folders, recursively) to the collection."""
    from .ingest import ingest

    with _errors(), obj.collection() as col, _progress("ingest") as progress:
        report = ingest(col, [Path(p) for p in paths],
                        annotations=Path(annotations) if annotations else None,
                        progress=progress)
    if as_json:
        _echo_json(report.to_dict())
        return
    click.echo(f"added {len(report.added)}, duplicates {len(report.duplicates)}, "
               f"failed {len(report.failed)} in {report.seconds:.1f} s")
    for path, reason in report.failed:
        click.echo(f"  failed: {path}: {reason}", err=True)
    if report.unmatched_annotations:
        click.echo(f"  {report.unmatched_annotations} annotation rows named files that were "
                   "not ingested", err=True)


def _resolve_image(col: Any, ref: str) -> int:
    """An image id from an id or a path that was ingested."""
    from .exceptions import NotFoundError

    if ref.isdigit():
        return int(ref)
    ids = col.store.find_by_path(str(Path(ref).expanduser().resolve()))
    if not ids:
        raise NotFoundError(f"no image was ingested from {ref}")
    return ids[0]


@main.command("annotate")
@click.argument("image")
@click.option("--title", help="New title ('' clears it).")
@click.option("--description", help="New description ('' clears it).")
@click.option("--tags", help="Replace all tags (separated by ';' or ',').")
@click.option("--add-tag", "add_tags", multiple=True, help="Add a tag (repeatable).")
@click.option("--remove-tag", "remove_tags", multiple=True, help="Remove a tag (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def annotate_cmd(obj: Context, image: str, title: str | None, description: str | None,
                 tags: str | None, add_tags: tuple[str, ...], remove_tags: tuple[str, ...],
                 as_json: bool) -> None:
    """Edit the title, description or tags of IMAGE (an id or the path it was ingested from)."""
    from .annotations import split_tags

    with _errors(), obj.collection() as col:
        record = col.annotate(
            _resolve_image(col, image), title=title, description=description,
            tags=None if tags is None else split_tags(tags),
            add_tags=add_tags, remove_tags=remove_tags,
        )
    if as_json:
        _echo_json(record.to_dict())
    else:
        click.echo(f"{record.id}: {record.title!r} tags: {', '.join(record.tags) or '-'}")


@main.command("remove")
@click.argument("images", nargs=-1, required=True)
@click.pass_obj
def remove_cmd(obj: Context, images: tuple[str, ...]) -> None:
    """Remove images (ids or ingested paths) from the collection; the files stay on disk."""
    with _errors(), obj.collection() as col:
        ids = [_resolve_image(col, ref) for ref in images]
        removed = col.remove(ids)
    missing = sorted(set(ids) - set(removed))
    click.echo(f"removed {len(removed)}")
    if missing:
        raise click.ClickException("no image with id " + ", ".join(map(str, missing)))


@main.command("reindex")
@click.option("--embeddings", is_flag=True,
              help="Also embed, with the active model, every image that has no vector for it.")
@click.pass_obj
def reindex_cmd(obj: Context, embeddings: bool) -> None:
    """Rebuild the Whoosh index (and optionally missing vectors) from the database."""
    with _errors(), obj.collection() as col:
        n = col.reindex()
        click.echo(f"text index rebuilt: {n} documents")
        if embeddings:
            from .ingest import embed_missing

            with _progress("embed") as progress:
                done, failed = embed_missing(col, progress=progress)
            click.echo(f"embedded {done} images with {col.model_id}; failed {len(failed)}")
            for path, reason in failed:
                click.echo(f"  failed: {path}: {reason}", err=True)


@main.command("check")
@click.option("--repair", "do_repair", is_flag=True, help="Fix what can be fixed.")
@click.option("--quick", is_flag=True, help="Skip the per-file checks of source files.")
@click.pass_obj
def check_cmd(obj: Context, do_repair: bool, quick: bool) -> None:
    """Verify the data directory; exit status 1 naming each problem found."""
    from .check import check, repair

    with _errors(), obj.collection() as col:
        if do_repair:
            with _progress("repair") as progress:
                problems = repair(col, progress=progress)
        else:
            problems = check(col, quick=quick)
    if not problems:
        click.echo("ok: database, text index, vectors and files agree")
        return
    for problem in problems:
        fix = "" if problem.repairable else " (cannot be repaired)"
        click.echo(f"problem: {problem}{fix}", err=True)
    if not do_repair:
        click.echo("run `hybrid-search check --repair` to fix what can be fixed", err=True)
    sys.exit(1)


@main.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats_cmd(obj: Context, as_json: bool) -> None:
    """Counts of images, annotations and vectors."""
    with _errors(), obj.collection() as col:
        stats = col.stats()
    if as_json:
        _echo_json(stats)
    else:
        for key, value in stats.items():
            click.echo(f"{key}: {value}")


def _print_results(response: Any) -> None:
    if not response.hits:
        click.echo("no results")
        return
    for hit in response.hits:
        sig = "  ".join(
            f"{name}={value:.3f}" if value is not None else f"{name}=-"
            for name, value in hit.signals.items()
        )
        title = hit.record.title or Path(hit.record.path).name
        click.echo(f"{hit.rank:>3}. [{hit.record.id}] {title}  score={hit.score:.3f}  {sig}")
        click.echo(f"     {hit.record.path}")
    shown = f"{response.offset + 1}-{response.offset + len(response.hits)}"
    click.echo(f"({shown} of {response.total})")


@main.command("search")
@click.option("--text", "-t", help="Search words (quotes, AND/OR/NOT, -word, field:word).")
@click.option("--image", "-i", type=click.Path(dir_okay=False), help="A query image file.")
@click.option("--like", type=int, help="Use the stored image with this id as the query image.")
@click.option("--alpha", type=float, help="Weight of the image side, 0..1 (text: 1 - alpha).")
@click.option("--fusion", type=click.Choice(["linear", "rrf"]))
@click.option("--normalization", type=click.Choice(["minmax", "zscore"]))
@click.option("--limit", type=int)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of results.")
@click.pass_obj
def search_cmd(obj: Context, text: str | None, image: str | None, like: int | None,
               alpha: float | None, fusion: str | None, normalization: str | None,
               limit: int | None, offset: int, as_json: bool) -> None:
    """Search by words, by an image, or both."""
    from .search import SearchRequest, search

    with _errors(), obj.collection() as col:
        image_bytes = None
        if image is not None:
            try:
                image_bytes = Path(image).read_bytes()
            except OSError as e:
                raise QueryError(f"cannot read query image {image}: {e.strerror}") from None
        response = search(col, SearchRequest(
            text=text, image_bytes=image_bytes, image_name=image or "query image",
            image_id=like, alpha=alpha, fusion=fusion, normalization=normalization,
            limit=limit, offset=offset,
        ))
    if as_json:
        _echo_json([h.to_dict() for h in response.hits])
    else:
        _print_results(response)


@main.group("evaluate")
def evaluate_grp() -> None:
    """Measure retrieval quality on a labelled set."""


@evaluate_grp.command("images")
@click.option("--ground-truth", required=True, type=click.Path(dir_okay=False, exists=True),
              help="CSV with columns file,label (or file,group).")
@click.option("--root", type=click.Path(file_okay=False, exists=True),
              help="Folder the files are relative to (default: the CSV's folder).")
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]))
@click.pass_obj
def evaluate_images_cmd(obj: Context, ground_truth: str, root: str | None,
                        metric: str | None) -> None:
    """Every image as a query against all others: mAP, P@10, P@20 (JSON on stdout)."""
    from .evaluate import evaluate_images

    with _errors(), obj.collection(metric=metric) as col, _progress("ingest") as progress:
        result = evaluate_images(col, Path(ground_truth), Path(root) if root else None,
                                 progress=progress)
    _echo_json(result)


@evaluate_grp.command("captions")
@click.option("--ground-truth", required=True, type=click.Path(dir_okay=False, exists=True),
              help="CSV with columns file,caption (several rows per photo).")
@click.option("--root", type=click.Path(file_okay=False, exists=True),
              help="Folder the files are relative to (default: the CSV's folder).")
@click.option("--annotate-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of photos whose first caption is stored as their annotation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def evaluate_captions_cmd(obj: Context, ground_truth: str, root: str | None,
                          annotate_fraction: float, seed: int) -> None:
    """Captions as queries for their own photo: R@1/5/10 and MRR per mode (JSON on stdout)."""
    from .evaluate import evaluate_captions

    with _errors(), obj.collection() as col, _progress("evaluate") as progress:
        result = evaluate_captions(col, Path(ground_truth), Path(root) if root else None,
                                   annotate_fraction=annotate_fraction, seed=seed,
                                   progress=progress)
    _echo_json(result)


@main.command("serve")
@click.option("--host", help="Address to listen on (setting host).")
@click.option("--port", type=int, help="Port to listen on (setting port).")
@click.option("--demo", is_flag=True, help="Build the demo collection first.")
@click.pass_obj
def serve_cmd(obj: Context, host: str | None, port: int | None, demo: bool) -> None:
    """Serve the search page and JSON API under the waitress WSGI server."""
    from .web.server import serve

    with _errors():
        settings = obj.settings(host=host, port=port)
        if demo:
            _build_demo(obj)
        serve(settings)


def _build_demo(obj: Context) -> None:
    with obj.collection() as col:
        _ingest_demo(col, err=True)


def _ingest_demo(col: Any, err: bool = False) -> None:
    """Add the bundled demo photos with their annotations, and say what happened."""
    from .demo import ANNOTATIONS_CSV, PHOTOS_DIR
    from .ingest import ingest

    with _progress("demo") as progress:
        report = ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV, progress=progress)
    click.echo(f"demo collection in {col.root}: added {len(report.added)}, "
               f"already there {len(report.duplicates)}", err=err)


@main.group("models")
def models_grp() -> None:
    """List and download image models (CLIP weights are never downloaded while searching)."""


@models_grp.command("list")
@click.option("--cached", is_flag=True, help="Only weights already on this machine.")
def models_list_cmd(cached: bool) -> None:
    """The bundled model and the open_clip models with their pretrained tags."""
    from .clip import available_models, cached_weights

    click.echo("efficientnet-lite0  (bundled, offline, the default)")
    with _errors():
        for name, tags in available_models():
            marks = [f"{t}*" if cached_weights(name, t) is not None else t for t in tags]
            if cached and not any(m.endswith("*") for m in marks):
                continue
            click.echo(f"clip:{name}  " + (", ".join(marks) or "(local checkpoint only)"))
    click.echo("* = weights in the local cache")


@models_grp.command("download")
@click.argument("name")
@click.option("--pretrained", help="open_clip pretrained tag (default: the model's first).")
def models_download_cmd(name: str, pretrained: str | None) -> None:
    """Download CLIP weights NAME (e.g. ViT-B-32) into the local cache, with progress."""
    from .clip import available_models, download
    from .exceptions import ConfigError

    name = name.removeprefix("clip:")
    with _errors():
        if pretrained is None:
            tags = dict(available_models()).get(name)
            if not tags:
                raise ConfigError(f"no pretrained tags known for {name}; pass --pretrained")
            pretrained = tags[0]
        path = download(name, pretrained, progress=True)
    click.echo(f"downloaded {name} ({pretrained}) to {path}")
    click.echo(f"use it: HYBRID_SEARCH_MODEL=clip:{name} HYBRID_SEARCH_CLIP_PRETRAINED={pretrained}"
               " hybrid-search reindex --embeddings")


@main.command("demo")
@click.option("--no-search", is_flag=True, help="Only build the collection.")
@click.pass_obj
def demo_cmd(obj: Context, no_search: bool) -> None:
    """Build the demo collection (bundled photos with annotations) and run sample searches."""
    from .demo import PHOTOS_DIR
    from .search import SearchRequest, search

    with _errors(), obj.collection() as col:
        _ingest_demo(col)
        if no_search:
            return
        for words in ("cat", "coffee cup"):
            click.echo(f"\n$ hybrid-search search --text {words!r}")
            _print_results(search(col, SearchRequest(text=words, limit=3)))
        query = PHOTOS_DIR / "rocket.jpg"
        click.echo(f"\n$ hybrid-search search --image {query} --text 'launch'")
        _print_results(search(col, SearchRequest(text="launch", image_bytes=query.read_bytes(),
                                                 limit=3)))


if __name__ == "__main__":  # pragma: no cover
    main()
