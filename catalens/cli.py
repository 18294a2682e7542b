"""The `catalens` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import typer

from catalens.errors import CatalensError
from catalens.options import (
    AUDIT,
    BSON_GENERATE,
    BSON_INDEX,
    DEMO,
    EVALUATE,
    EXPORT,
    EXPORT_MODEL,
    MATCH,
    PREDICT,
    SERVE,
    SHARD,
    SORT,
    STATS,
    TRAIN,
    ZOOMED,
    with_options,
)
from catalens.rundir.layout import CONFIG_FILE

app = typer.Typer(
    help="Classify e-commerce product images: train on a labelled collection, evaluate honestly, predict.\n\n"
    "DATA is a folder (one subfolder per class, optionally train/ val/ test/), fashion-mnist[:DIR], bson:FILE "
    "(a product dump such as CDiscount's train.bson), csv:FILE (a marketplace export such as Shopee's) or a SQL "
    "database URL (sqlite:///products.db, postgresql+psycopg://user@host/db).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None,
)


def print_version(value: bool) -> None:
    if value:
        from catalens import __version__

        print(f"catalens {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version,
                                 help="Print catalens's version and exit."),
) -> None:
    """Classify e-commerce product images."""


catalog_app = typer.Typer(help="Inspect data sources.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
bson_app = typer.Typer(help="BSON product dumps (CDiscount's format): generate test files, build the index.",
                       no_args_is_help=True)
app.add_typer(bson_app, name="bson")
zoomed_app = typer.Typer(help="The zoomed-vs-normal filter: bootstrap its training set from normal product photos.",
                         no_args_is_help=True)
app.add_typer(zoomed_app, name="zoomed")

@app.command()
@with_options(TRAIN)
def train(**options):
    """Train a classifier and write a run directory (weights, model card, config, history, curves).

    With only --data and --out, the auto recipe chooses from the data and this machine, within --time-budget, and
    says what it chose and why: fastcnn for small grey images; for photos, pretrained EfficientNet-Lite features
    (escalating to Lite1 and a Lite0+1+2 ensemble with mirror views while the task is not yet easy and time is
    left) and a cross-validated linear head, the ensemble distilled into the single-pass heads. Each candidate's
    speed is measured; the most accurate one at least --min-speed photos/s is kept (the card and
    `catalens evaluate`'s report.md list them all).

    \b
    Examples:
      catalens train --data photos/ --out runs/auto
      catalens train --data photos/ --min-speed 0 --out runs/most-accurate
      catalens train --data fashion-mnist --model fastcnn --epochs 18 --out runs/fm
      catalens train --data photos/ --model tf_efficientnet_lite0 --pretrained --freeze backbone --out runs/p
      catalens train --data bson:train.bson --level 2 --sample 100000 --min-per-class 50 --out runs/cd
    """
    from catalens.engine.config import make_config
    from catalens.engine.train import train as run_train

    config, resume, nproc = options.pop("config_file"), options.pop("resume"), options.pop("nproc")
    time_budget, min_speed = options.pop("time_budget"), options.pop("min_speed")
    overrides = options
    data, out = options.get("data"), options.get("out")
    if nproc != 1:
        launch_data_parallel(nproc, resume, config, overrides)
        return
    if resume:
        if not out:
            raise CatalensError("--resume needs --out RUN_DIR (the run to continue)")
        saved = Path(out) / CONFIG_FILE
        run_train(make_config(saved if saved.is_file() else config, **overrides), resume=True)
        return
    if not data and not config:
        raise CatalensError("give --data DATA (a folder or fashion-mnist) or --config FILE")
    if not out and not config:
        raise CatalensError("give --out RUN_DIR, the directory the run is written to")
    from catalens.engine.recipes import auto_train, wants_auto

    if wants_auto(overrides, config):
        auto_train(overrides, time_budget, min_speed)
        return
    run_train(make_config(config, **overrides))


def launch_data_parallel(nproc: int, resume: bool, config: Path | None, overrides: dict):
    """`catalens train --nproc N ...`: the same command on N processes through torchrun (engine/distributed.py),
    checked here first so that a mistake is one line, not N tracebacks."""
    from catalens.engine.config import make_config
    from catalens.engine.distributed import launch
    from catalens.engine.recipes import wants_auto

    if "WORLD_SIZE" in os.environ:
        raise CatalensError("--nproc is for launching; under torchrun, leave it out")
    if not resume and wants_auto(overrides, config):
        raise CatalensError("--nproc needs an explicit --model (and --epochs): the auto recipe trains cached-feature "
                            "heads, which run on one process")
    settings = make_config(Path(overrides["out"]) / CONFIG_FILE if resume and overrides.get("out") and
                           (Path(overrides["out"]) / CONFIG_FILE).is_file() else config, **overrides)
    out = Path(settings.out)
    if settings.batch_size % nproc:
        raise CatalensError(f"--batch-size {settings.batch_size} is the global batch: it must divide by the {nproc} "
                            "processes")
    if not resume and out.exists() and any(out.iterdir()):
        raise CatalensError(f"run directory {out} already exists and is not empty; use --resume to continue it, "
                            "or choose another --out")
    argv = list(sys.argv[sys.argv.index("train") + 1:])
    for i, arg in enumerate(argv):  # drop --nproc N / --nproc=N
        if arg == "--nproc":
            del argv[i:i + 2]
            break
        if arg.startswith("--nproc="):
            del argv[i]
            break
    code = launch(argv, nproc, settings.device, str(out))
    if code:
        raise typer.Exit(code)


@app.command()
@with_options(SHARD)
def shard(data: str, out: Path, size: str, categories: str | None, sample: int | None):
    """Write a catalog as WebDataset-style tar shards that DDP ranks and Ray workers read in parallel, from local
    disk or object storage (copy DIR to s3://... and read it as shards:s3://.../DIR with fsspec and s3fs).

    Every image keeps its original bytes (Fashion-MNIST's become PNG); labels, splits, titles and products go in
    each sample's .json and in index.csv. Read them back as DATA = shards:DIR. BSON dumps do not need this: they
    are read in place.

    \b
    Example:
      catalens shard bson:train.bson --out shards/train --size 1GB
      catalens train --data shards:shards/train --nproc 2 --model fastcnn --out runs/cd
    """
    from catalens.data import DataOptions
    from catalens.data.shards import write_shards

    summary = write_shards(data, out, size, DataOptions(categories=categories, sample=sample))
    print(f"{summary.items:,} images in {summary.shards} shard(s), {summary.bytes / 1e6:,.1f} MB, written to "
          f"{summary.out}" + (f"; {summary.problems} unreadable (problems.csv)" if summary.problems else ""),
          file=sys.stderr)


@app.command()
@with_options(AUDIT)
def audit(data: str, out: Path, run: Path | None, backbone: str, folds: int, sample: int | None,
          categories: str | None, batch_size: int, workers: int | None, apply_to: Path | None, mode: str, kinds: str,
          write_catalog_to: Path | None, remove: Path | None):
    """Find the mislabelled, duplicated, leaked, off-topic and broken images of a catalog, ranked, with pictures.

    Label issues come from out-of-fold probabilities (k-fold linear heads on frozen features) and confident
    learning (cleanlab); duplicates from identical bytes, perceptual hashes and embedding neighbours (faiss);
    leaks are duplicates across train and val/test; outliers are far from every other image, near-uniform or
    extremely elongated. issues.csv has one row per finding: item,kind,score,given_label,suggested_label,cluster
    (and the evidence); within a kind a higher score is more likely a real problem. Labels are never changed.

    \b
    Examples:
      catalens audit photos/ --out audit/
      catalens audit photos/ --out audit/ --apply review/ --kinds label,duplicate
      catalens audit photos/ --out audit/ --write-catalog clean.csv --remove audit/marked.csv
    """
    from catalens.apps.audit import audit as run_audit
    from catalens.apps.audit.act import apply_findings, read_issues, write_catalog
    from catalens.data import DataOptions, load_catalog

    options = DataOptions(sample=sample, categories=categories)
    existing = out / "issues.csv"
    if (apply_to or write_catalog_to) and existing.is_file():
        catalog = load_catalog(data, options, split=False)
        print(f"using the findings in {existing}", file=sys.stderr)
    else:
        result = run_audit(data, out, model=run, backbone=backbone, options=options, folds=folds,
                           batch_size=batch_size, workers=workers)
        catalog = result.catalog
    if apply_to:
        wanted = tuple(kind.strip() for kind in kinds.split(",") if kind.strip())
        summary = apply_findings(catalog, read_issues(existing), apply_to, mode, wanted)
        print(f"{sum(summary.placed.values()):,} suspect(s) placed in {apply_to} ("
              + ", ".join(f"{kind} {count}" for kind, count in summary.placed.items()) + f"); manifest "
              f"{summary.manifest}", file=sys.stderr)
    if write_catalog_to:
        kept, dropped = write_catalog(catalog, remove, write_catalog_to)
        print(f"{kept:,} items written to {write_catalog_to} ({dropped:,} removed)", file=sys.stderr)


@app.command()
@with_options(MATCH)
def match(args: list[str], out: Path, run: Path | None, add: bool, images: Path | None, matcher: Path | None,
          explain: Path | None, columns: str | None):
    """Find the postings of the same product: titles (TF-IDF words and characters, a sentence encoder when
    installed) and perceptual hashes, combined by a logistic regression with thresholds fitted on labelled data.

    Output in Shopee's form: posting_id,matches (space-separated, the posting itself first). With a label_group
    column, the mean F1 per posting of each signal alone and combined is printed (thresholds chosen beforehand).

    \b
    Examples:
      catalens match postings.csv --out matches.csv --explain pairs.csv
      catalens match fit labelled.csv --out matcher.json
      catalens match postings.csv --matcher matcher.json --out matches.csv
      catalens match index csv:catalog.csv --run runs/shop --out shop-index
      catalens match index csv:new-items.csv --run runs/shop --out shop-index --add
      catalens serve runs/shop --match-index shop-index
    """
    from catalens.apps.match import fit_matcher, read_postings, run_match

    if args[0] == "index":
        if len(args) != 2 or run is None:
            raise CatalensError("write `catalens match index DATA --run RUN --out INDEX [--add]`")
        from catalens.data import DataOptions
        from catalens.support.product_index import build_index

        summary = build_index(args[1], run, out, add=add, options=DataOptions(
            images=str(images) if images else None, columns=columns))
        print(f"{summary['added']:,} item(s) indexed ({summary['title_only']:,} by title alone, "
              f"{summary['skipped_known']:,} already there); {summary['items']:,} in {out}", file=sys.stderr)
        return

    if args[0] == "fit":
        if len(args) != 2:
            raise CatalensError("write `catalens match fit DATA --out matcher.json`")
        fitted = fit_matcher(read_postings(args[1], columns, images), trained_on=args[1])
        out.write_text(fitted.to_json())
        print(f"matcher ({'+'.join(fitted.signals)}, threshold {fitted.threshold:g}) written to {out}",
              file=sys.stderr)
        return
    if len(args) != 1:
        raise CatalensError("give one CSV: catalens match DATA --out matches.csv")
    run_match(args[0], out, matcher, explain, columns, images)


@app.command()
@with_options(EVALUATE)
def evaluate(run: Path, data: str, out: Path | None, labels: str | None, split: str | None, batch_size: int,
             workers: int | None, backend: str, categories: str | None, sample: int | None, leakage_check: bool,
             text: str | None):
    """Accuracy, top-k, per-class precision/recall/F1/NPV, confusion matrices, mistakes, size and speed, and
    the evaluation images that copy training images (leakage).

    Writes metrics.json, report.md and PNG plots to --out. Example:
    catalens evaluate runs/fm --data fashion-mnist --out runs/fm/eval
    """
    from catalens.report.evaluate import evaluate as run_evaluate

    run_evaluate(run, data, labels=labels, out=out, split=split, batch_size=batch_size, workers=workers,
                 backend=backend, data_overrides={"categories": categories, "sample": sample},
                 leakage_check=leakage_check, text=text)


@app.command()
@with_options(EXPORT_MODEL)
def export(run: Path, out: Path | None, output_format: str, int8: bool, tolerance: float, data: str | None):
    """Export a trained model as one self-contained ONNX file: dynamic batch axis, class names and
    preprocessing in its metadata. The outputs are checked against PyTorch and the largest difference shown.

    The file is then a MODEL for evaluate and predict: catalens predict model.onnx photos/ --backend onnx

    With --int8 the run gets an int8 network (RUN/model.int8.onnx) when it passes the check; the card's `int8`
    says what was measured and which model is used: catalens export runs/zoomed --int8
    """
    from catalens.rundir.layout import INT8_FILE
    from catalens.rundir.run import export_model

    model = run
    if output_format != "onnx":
        raise CatalensError(f"unknown export format {output_format!r}; catalens exports onnx")
    if out is None and not int8:
        raise CatalensError("give --out FILE (e.g. --out model.onnx), or --int8 to add an int8 network to the run")
    if int8:
        import shutil

        from catalens.report.int8 import check_int8

        record = check_int8(model, data=data, tolerance=tolerance)
        if record["status"] == "used" and out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model / INT8_FILE, out)
            typer.echo(f"wrote {out} (int8, {out.stat().st_size / 1e6:.2f} MB)")
            return
    if out is not None:
        result = export_model(model, out)
        typer.echo(f"wrote {result['path']} ({result['size_mb']:.2f} MB); max abs difference to PyTorch: "
                   f"{result['max_abs_difference']:.2e}")


@app.command()
@with_options(PREDICT)
def predict(run: Path, inputs: list[str], top_k: int, output_format: str, out: Path | None, split: str | None,
            batch_size: int, workers: int | None, backend: str, categories: str | None, sample: int | None,
            images: str | None, columns: str | None, text: str | None, submission: Path | None, engine: str,
            ray_address: str | None, actors: int | None, gpus_per_actor: float, threshold: float | None,
            target_accuracy: float | None, min_confidence: float | None):
    """Top-k labels with probabilities for each image, as CSV or JSON Lines. For a product dump (bson:FILE) one
    row per product: its images' probabilities averaged, with the category level names.

    \b
    Examples:
      catalens predict runs/fm photos/ --top-k 3 --format jsonl --out predictions.jsonl
      catalens predict runs/cd bson:test.bson --submission submission.csv
      catalens predict runs/attributes photos/ --min-confidence 0.9 --out predictions.csv
    """
    from catalens.data import DataOptions
    from catalens.inference.predict import predict as run_predict

    if submission and engine != "local":
        raise CatalensError("--submission runs on the local engine so far (it resumes product by product); leave "
                            "out --engine ray, or write --format parquet with --engine ray")
    if submission:
        from catalens.inference.submission import write_submission
        from catalens.rundir.run import Model

        if len(inputs) != 1:
            raise CatalensError("--submission takes one input, the BSON dump: bson:test.bson")
        result = write_submission(Model.load(run, backend=backend), inputs[0], submission, batch_size=batch_size,
                                  workers=workers)
        print(f"{result.products:,} products in {result.path} ({result.written:,} written now"
              + (f", {result.resumed_from:,} by an earlier run" if result.resumed_from else "") + ")",
              file=sys.stderr)
        return
    summary = run_predict(run, inputs, k=top_k, output_format=output_format, out=out, batch_size=batch_size,
                          workers=workers, split=split, backend=backend,
                          options=DataOptions(categories=categories, sample=sample, images=images, columns=columns),
                          engine=engine, ray_address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor,
                          text=text, threshold=threshold, target_accuracy=target_accuracy,
                          min_confidence=min_confidence)
    if out:
        print(f"predictions for {summary['predicted']} images written to {out}"
              + (" (one row per product)" if summary["per_product"] else "")
              + (f"; {summary['failed']} unreadable" if summary["failed"] else ""), file=sys.stderr)
    if "coverage" in summary:
        print(f"answered {summary['coverage']:.1%} (probability >= {summary['threshold']:.4f}); "
              f"{summary['uncertain']:,} marked uncertain", file=sys.stderr)


@app.command("sort")
@with_options(SORT)
def sort_command(run: Path, input_dir: Path, output_dir: Path, mode: str, threshold: float | None,
                 target_accuracy: float | None, top_k: int, dry_run: bool, batch_size: int, workers: int | None,
                 backend: str, min_confidence: float | None):
    """Sort a folder of images into one folder per predicted class, e.g. zoomed/ and normal/.

    OUTPUT_DIR gets a folder per class, uncertain/ (with --threshold), unreadable/ (zero-byte, not an image,
    truncated; in move mode those stay where they are) and manifest.csv (source, destination, label,
    probability, top_k, error), written as the run goes. Names never collide (a_1.jpg, a_2.jpg, ...). Run the
    same command again after an interruption: finished files are skipped, nothing is predicted twice, and move
    mode never loses a file, even to kill -9.

    \b
    Examples:
      catalens sort runs/zoomed photos/ sorted/ --threshold 0.8
      catalens sort runs/zoomed photos/ sorted/ --target-accuracy 0.98
      catalens sort zoomed.onnx inbox/ sorted/ --mode move
      catalens sort runs/zoomed photos/ sorted/ --dry-run
      catalens sort runs/tree photos/ sorted/ --min-confidence 0.9
    """
    from catalens.apps.sort import sort_folder, write_errors
    from catalens.rundir.run import Model

    loaded = Model.load(run, backend=backend)
    threshold = loaded.answer_threshold(threshold, target_accuracy)
    summary = sort_folder(loaded, input_dir, output_dir, mode=mode, threshold=threshold, k=top_k, dry_run=dry_run,
                          batch_size=batch_size, workers=workers, min_confidence=min_confidence)
    if dry_run:
        for row in summary.plan:
            print(f"{row['source']} -> {row['destination'] or '(left in place)'}"
                  + (f"  [{row['error']}]" if row["error"] else f"  [{row['label']} {row['probability']:.3f}]"))
    else:
        write_errors(output_dir, summary)
    counts = ", ".join(f"{folder} {count:,}" for folder, count in sorted(summary.placed.items())) or "nothing new"
    print(("would place: " if dry_run else "placed: ") + counts
          + (f"; {summary.resumed:,} done by an earlier run" if summary.resumed else "")
          + (f"; {summary.completed_from_journal:,} finished from the interrupted run's plan"
             if summary.completed_from_journal else "")
          + (f"; {len(summary.unreadable):,} unreadable" if summary.unreadable else "")
          + (f"; {len(summary.errors):,} could not be placed" if summary.errors else "")
          + (f"; {summary.not_images:,} files without an image extension left alone" if summary.not_images else "")
          + (f"; {summary.images_per_s:,.0f} images/s" if summary.predicted else ""), file=sys.stderr)
    if threshold is not None and summary.predicted:
        unsure = summary.uncertain
        print(f"answered {1 - unsure / summary.predicted:.1%} of the {summary.predicted:,} photos predicted now "
              f"(probability >= {threshold:.4f}); {unsure:,} went to uncertain/", file=sys.stderr)
    for source, reason in summary.unreadable[:10]:
        print(f"  unreadable: {source}: {reason}", file=sys.stderr)
    if len(summary.unreadable) > 10:
        print(f"  ... {len(summary.unreadable) - 10} more in {output_dir / 'manifest.csv'} (error column)",
              file=sys.stderr)


@app.command()
@with_options(SERVE)
def serve(run: Path, host: str, port: int, db: str, backend: str, max_batch: int, max_wait_ms: float,
          max_upload_mb: float, max_megapixels: float, api_key: str | None, cors_origin: list[str] | None,
          keep_originals: bool, urls: bool, allow_private_urls: bool | None, insecure_no_auth: bool, access_log: bool,
          text: str | None, match_index: Path | None):
    """Serve a model: REST API, a web page for uploads, and a prediction history that survives restarts.

    Endpoints: POST /v1/predict (multipart `file`, one or several, or JSON {"images": [{"url"}|{"base64"}]};
    ?k=5, ?aggregate=true for several images of one product; a `title` field for models trained with --text),
    POST /v1/match (with --match-index: a photo and/or a `title` -> the nearest products), GET /v1/model,
    GET /v1/history, POST /v1/history/ID/correction, GET /v1/history/export (corrections as a zip of class
    folders), /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI). The page at / uploads, shows the top
    classes as bars and the history, where a wrong prediction can be corrected.

    \b
    Examples:
      catalens serve runs/zoomed
      catalens serve model.onnx --port 9000 --db postgresql+psycopg://catalens@db/catalens --api-key SECRET
      curl -F file=@shirt.jpg http://127.0.0.1:8000/v1/predict?k=3
    """
    from catalens.apps.serve import ServeOptions
    from catalens.apps.serve import serve as run_server

    run_server(run, host=host, port=port, backend=backend, access_log=access_log, options=ServeOptions(
        db=db, max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1e6), api_key=api_key, cors_origins=cors_origin or [],
        keep_originals=keep_originals, allow_urls=urls, allow_private_urls=bool(allow_private_urls),
        match_index=str(match_index) if match_index else None, text=text),
        insecure_no_auth=insecure_no_auth)


@zoomed_app.command("bootstrap")
@with_options(ZOOMED)
def zoomed_bootstrap(photos: list[Path], out: Path, crops_per_photo: float, area: str, val_share: float,
                     seed: int):
    """Make a zoomed-vs-normal training set from normal photos: each photo is a `normal` example and yields
    zoomed examples: close-up crops on the product (not the background), fabric filling the frame, and colour
    swatches, resized back to full size and sharpened. The split is per photo: no photo's crops land in both
    train/ and val/.

    \b
    Examples:
      catalens zoomed bootstrap --from clothing/train --from fashion-products/images --out zoomed-data
      catalens train --data zoomed-data --out runs/zoomed          # the auto recipe: pretrained features
      catalens sort runs/zoomed catalog-photos/ cleaned/
      catalens zoomed bootstrap --from clothing/validation --out zoomed-test --val-share 1
      catalens evaluate runs/zoomed --data zoomed-test --split val --out runs/zoomed/test
    """
    from catalens.apps.zoomed import bootstrap

    try:
        low, high = (float(value) for value in area.split(","))
    except ValueError:
        raise CatalensError(f"--area {area!r}: give two shares, MIN,MAX, e.g. 0.02,0.15") from None
    summary = bootstrap(photos, out, crops_per_photo=crops_per_photo, area=(low, high),
                        val_fraction=val_share, seed=seed)
    for split, counts in sorted(summary.images.items()):
        print(f"{out / split}: {summary.photos[split]:,} photos -> normal {counts['normal']:,}, "
              f"zoomed {counts['zoomed']:,}", file=sys.stderr)


@catalog_app.command("stats")
@with_options(STATS)
def catalog_stats(data: str, as_json: bool, verify: bool, **options):
    """Items, products, classes, images per class, imbalance ratio and problems (every image is decoded).
    With --json, `items` counts what training would use (after --dedupe and the filters).

    \b
    Examples:
      catalens catalog stats shop/
      catalens catalog stats csv:shopee/train.csv --top-groups 21 --dedupe --json
      catalens catalog stats sqlite:///products.db --label-column Category
    """
    from catalens.report.stats import catalog_stats as compute
    from catalens.report.stats import print_stats

    stats = compute(data, given_data_options(options), verify=verify)
    if as_json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print_stats(stats)


@catalog_app.command("export")
@with_options(EXPORT)
def catalog_export(data: str, out: Path, verify: bool, **options):
    """Write the catalog as CSV: image, label, product_id, title, description (one row per image).

    Example: catalens catalog export sqlite:///products.db --label-column Category --out catalog.csv
    """
    from catalens.report.stats import export_catalog

    rows = export_catalog(data, out, given_data_options(options), verify=verify)
    print(f"{rows:,} rows written to {out}", file=sys.stderr)


@bson_app.command("generate")
@with_options(BSON_GENERATE)
def bson_generate(out: Path, photos: Path, categories: Path, size: str | None, products: int | None, classes: int,
                  test: bool, quality: int, seed: int):
    """Write a BSON dump in CDiscount's exact format ({_id, imgs: [{picture}], category_id}, 1-4 images per
    product, 180x180 JPEGs) from real photos and the real category tree, for tests and benchmarks at scale.

    Example: catalens bson generate data/train.bson --from photos/ --categories category_names.csv --size 2GB
    """
    from catalens.data.bson_generate import generate_bson

    result = generate_bson(out, photos, categories, size=size, products=products, classes=classes, test=test,
                           seed=seed, quality=quality)
    print(f"wrote {result.path}: {result.products:,} products, {result.images:,} images, "
          f"{result.bytes / 1e6:,.1f} MB, {result.categories} categories", file=sys.stderr)


@bson_app.command("index")
@with_options(BSON_INDEX)
def bson_index(file: Path, rebuild: bool):
    """Build (or check) the index of a BSON dump: one pass reading only document headers. Every command that
    reads bson:FILE does this on first use; the index is saved beside the file (or in the cache directory)."""
    from catalens.data.sources.bson_index import open_index

    index = open_index(file, rebuild=rebuild)
    summary = index.summary()
    print(f"{file}: {summary['products']:,} products, {summary['images']:,} images, "
          f"{'labelled' if summary['labelled'] else 'no category_id (test file)'}; "
          + ("index reused" if index.reused else f"indexed in {summary['seconds']:.2f} s")
          + (f"; {summary['problems']} problem(s), see catalens catalog stats bson:{file}" if index.problems else ""),
          file=sys.stderr)


@app.command()
def models():
    """List the models you can pass to --model."""
    from catalens.models import MODELS
    from catalens.models.pretrained import PACKAGED_WEIGHTS, install_hint, packaged_weights_file
    from catalens.models.timm_models import LISTED_BACKBONES, timm_preprocessing

    for entry in MODELS.values():
        print(f"{entry.name:22s} {entry.description}")
    print("\nPretrained backbones (timm; --pretrained loads ImageNet weights, --freeze picks what trains):")
    for name in LISTED_BACKBONES:
        size = timm_preprocessing(name)["input_size"][0]
        note = ""
        if name in PACKAGED_WEIGHTS:
            note = "; weights offline: " + ("installed" if packaged_weights_file(name) else install_hint(name))
        print(f"{name:22s} {size} px{note}")
    print(f"{'NAME or timm:NAME':22s} any other timm architecture (weights: --weights FILE or timm's hub)")


@app.command()
@with_options(DEMO)
def demo(out: Path, epochs: int, data: str):
    """Train the default model on Fashion-MNIST for a few minutes and evaluate it on the test set."""
    from catalens.apps.demo import run_demo

    run_demo(out, epochs, data)


def given_data_options(options: dict):
    """DataOptions from the options given on the command line (the others keep their defaults)."""
    from catalens.data import DataOptions

    return DataOptions(**{key: value for key, value in options.items() if value is not None})


def click_classes(name: str) -> tuple[type, ...]:
    """`name` from click and from the copy of click that typer 0.2x vendors as typer._click (its exceptions are
    not click's, so `except click.ClickException` alone misses them)."""
    found = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored
    except ImportError:
        return tuple(found)
    found += [getattr(vendored, name)] if hasattr(vendored, name) else []
    found += [typer.Abort] if name == "Abort" and hasattr(typer, "Abort") else []
    return tuple(found)


def usage_line(error) -> str:
    """A usage error as one line that says where to read more."""
    if type(error).__name__ == "NoArgsIsHelpError":  # a command group given no command: its help
        return error.format_message()
    context = getattr(error, "ctx", None)
    where = f"; see '{context.command_path} --help'" if context is not None else ""
    return f"error: {error.format_message().rstrip('.')}{where}"


def main() -> None:
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C (and ctx.exit(N)) into a returned exit code
        if isinstance(code, int) and code:
            if code == 130:
                print("interrupted", file=sys.stderr)
            sys.exit(code)
    except click_classes("Abort"):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click_classes("UsageError") as error:
        print(usage_line(error), file=sys.stderr)
        sys.exit(2)
    except click_classes("ClickException") as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code)
    except CatalensError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
