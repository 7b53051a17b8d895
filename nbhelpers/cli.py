"""Command line: ``nbhelpers synth | run | bench | train | predict | report``.

Examples::

    nbhelpers synth --out data/synthad --preset cpu
    nbhelpers run --preset cpu --data data/synthad
    nbhelpers bench --method baseline --data data/synthad --category grass --preset cpu
    nbhelpers train --method baseline --data data/synthad --category grass --out model.pt
    nbhelpers train --method thfr --data data/synthad --category nuts --out model.pt --resume   # after Ctrl-C
    nbhelpers predict --method baseline --checkpoint model.pt --data data/synthad --category grass
    nbhelpers report --data /path/to/images --layout folder --method baseline --out report.html
    torchrun --nproc_per_node=2 -m nbhelpers.cli train --method thfr --data data/synthad --category nuts --out m.pt

A failing method/category of ``bench`` (any exception) or notebook of ``run`` is reported with
where it failed and the others still run; the exit code is 1 when anything failed, 2 on bad input
(:class:`~nbhelpers.errors.NbhelpersError`) and 130 when interrupted (Ctrl-C or SIGTERM: the
checkpoints written so far are kept).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbhelpers.errors import NbhelpersError
from nbhelpers.outputs import check_output_file, check_output_folder, write_text_atomic


def _cmd_synth(args: argparse.Namespace) -> int:
    from nbhelpers.data.synth import generate, plan

    out = check_output_folder(args.out, "--out")
    write, keep = plan(out, args.categories, args.preset, args.seed, args.overwrite)
    generate(out, categories=args.categories, preset=args.preset, seed=args.seed, overwrite=args.overwrite)
    done = [f"wrote {', '.join(write)}"] if write else []
    done += [f"kept {', '.join(keep)} (already there with seed {args.seed} and preset {args.preset}, or not "
             "written by SynthAD; --overwrite regenerates)"] if keep else []
    print(f"SynthAD in {out}: {'; '.join(done)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from nbhelpers.runner import run_collection

    check_output_folder(args.out, "--out")
    runs = run_collection(args.notebooks, args.out, preset=args.preset, data_root=args.data, device=args.device,
                          seed=args.seed, only=args.only, timeout=args.timeout)
    failed = [r for r in runs if r.status != "ok"]
    print(f"\n{len(runs) - len(failed)}/{len(runs)} notebooks ok; index: {Path(args.out) / 'index.html'}")
    for r in failed:
        print(f"FAILED {r.name}: cell {r.failed_cell}: {r.error}")
    return 1 if failed or not runs else 0


def _categories(data: str, category: str, layout: str) -> list[str]:
    from nbhelpers.data.layouts import require_categories

    return require_categories(data, layout) if category == "all" else category.split(",")


def _overrides(args: argparse.Namespace) -> dict:
    """Config overrides from ``--set key=value`` and ``--seen-anomalies``. A value is read as JSON
    (``true``, ``[1,2]``, ``null``), else as a Python literal (``False``, ``(1, 2)``, ``None``), else as text."""
    out = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
    if args.seen_anomalies is not None:
        out["seen_anomalies"] = args.seen_anomalies
    return out


def _cmd_throughput(args: argparse.Namespace) -> int:
    from nbhelpers import get_device
    from nbhelpers.benchmark import format_table
    from nbhelpers.throughput import THROUGHPUT_COLUMNS, matmul_peak_gflops, throughput

    out = check_output_folder(args.out, "--out")
    cat = _categories(args.data, args.category, args.layout)[0]
    device = get_device(args.device)
    peak = matmul_peak_gflops(device)
    print(f"[throughput] measured matrix-multiply rate on {device}: {peak:.1f} GFLOP/s")
    rows = []
    for method in _methods(args.method):
        rows += throughput(method, args.data, cat, preset=args.preset, batch_sizes=args.batch_sizes,
                           device=args.device, seed=args.seed, layout=args.layout, peak=peak,
                           **{"epochs": 1, **_overrides(args)})
    table = format_table(rows, columns=THROUGHPUT_COLUMNS)
    write_text_atomic(out / "throughput.json", json.dumps(rows, indent=2))
    write_text_atomic(out / "throughput.md", f"Measured matrix-multiply rate: {peak:.1f} GFLOP/s\n\n{table}\n")
    print(table)
    return 0


def _methods(spec: str) -> list[str]:
    """``all`` (every registered method) or a comma list of method names."""
    from nbhelpers.methods import available

    return available() if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]


def _failure(name: str, exc: Exception) -> str:
    """One line naming what failed and why; for an unexpected exception also where (the full
    traceback goes to stderr)."""
    if isinstance(exc, NbhelpersError):
        return f"{name}: {exc}"
    traceback.print_exception(exc, file=sys.stderr)
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{name}: {exc.__class__.__name__}: {exc} (in {frame.name}, {frame.filename}:{frame.lineno})"


def _plan_bench(args: argparse.Namespace) -> list[tuple[str, str, Any, Path]]:
    """Every setting of a ``bench`` checked before any fit: the output folder, each method's config
    (type and range), the data root, each category's split and its seen anomalies. Returns
    ``(method, category, split, row file)`` per run.

    Raises:
        NbhelpersError: the first bad setting (exit code 2, nothing computed).
    """
    from nbhelpers.benchmark import bench_paths, hold_out_anomalies
    from nbhelpers.data.layouts import load_split
    from nbhelpers.methods import get_config

    out = check_output_folder(args.out, "--out")
    configs = {m: get_config(m, args.preset, device=args.device, seed=args.seed, **_overrides(args))
               for m in _methods(args.method)}
    splits = {c: load_split(args.data, c, layout=args.layout) for c in _categories(args.data, args.category, args.layout)}
    plan = []
    for method, config in configs.items():
        for cat, split in splits.items():
            hold_out_anomalies(split, int(getattr(config, "seen_anomalies", 0)), args.seed)
            plan.append((method, cat, split, bench_paths(out, method, config, split, args.preset)[0]))
    return plan


def _cmd_bench(args: argparse.Namespace) -> int:
    from nbhelpers.benchmark import format_table, run_benchmark

    if args.throughput:
        return _cmd_throughput(args)
    from nbhelpers.progress import progress

    rows, failures, todo = [], [], []
    out = Path(args.out)
    for method, cat, split, row_file in _plan_bench(args):
        if row_file.exists() and not args.force:  # resume: rows finished before an interruption are kept
            rows.append(json.loads(row_file.read_text()))
            print(f"[bench] {method}/{cat}: done before with the same settings and data files, kept ({row_file}); "
                  "--force recomputes", file=sys.stderr)
        else:
            todo.append((method, cat, split))
    runs = progress(todo, desc="bench", unit="run", leave=True)  # its ETA: runs left x mean time per run so far
    for method, cat, split in runs:
        runs.set_postfix_str(f"{method}/{cat}")
        try:
            rows.append(run_benchmark(method, args.data, cat, preset=args.preset, layout=args.layout,
                                      device=args.device, seed=args.seed, bench_dir=out, refit=args.force,
                                      split=split, **_overrides(args)))
        except Exception as exc:  # reported, and the other runs go on; Ctrl-C (not an Exception) stops all
            failures.append(_failure(f"{method}/{cat}", exc))
            print(f"FAILED {failures[-1]}", file=sys.stderr)
    table = format_table(rows)
    if rows:
        write_text_atomic(out / "results.json", json.dumps(rows, indent=2))
        write_text_atomic(out / "results.md", table + "\n")
    print(table)
    print(f"\n{len(rows)}/{len(rows) + len(failures)} runs ok")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from nbhelpers import distributed
    from nbhelpers.benchmark import hold_out_anomalies
    from nbhelpers.data.layouts import load_split
    from nbhelpers.methods import create
    from nbhelpers.train import is_checkpoint

    distributed.init_from_env()  # under torchrun: join the process group (DDP in the training loop)
    out = check_output_file(args.out, "--out", ours=is_checkpoint, overwrite=args.overwrite, kind="checkpoint")
    split = load_split(args.data, args.category, layout=args.layout)
    model = create(args.method, args.preset, device=args.device, seed=args.seed, **_overrides(args))
    seen, split = hold_out_anomalies(split, model.seen_anomalies, args.seed)
    path = model.fit_and_save(out, split.train, split.val or None, anomalies=seen or None, resume=args.resume)
    if distributed.is_main():
        print(f"saved {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint with the config it was trained with; ``--preset``, ``--seed``, ``--method``
    and ``--set`` given explicitly must agree with it (only device, batch size, workers and progress may
    change), and the category must be the one it was fitted on."""
    from nbhelpers.benchmark import evaluate_method, format_table
    from nbhelpers.data.layouts import load_split
    from nbhelpers.methods import create, load_method
    from nbhelpers.train import CheckpointError, load_checkpoint

    if args.preset is None:
        seed = {} if args.seed is None else {"seed": args.seed}
        model = load_method(args.checkpoint, device=args.device, **seed, **_overrides(args))
        if args.method is not None and args.method != model.name:
            raise CheckpointError(f"{args.checkpoint}: checkpoint has method={model.name!r}, expected {args.method!r}.")
    else:
        method = args.method or load_checkpoint(args.checkpoint).get("method")
        model = create(method, args.preset, device=args.device, seed=args.seed or 0,
                       **_overrides(args)).load(args.checkpoint)
    split = load_split(args.data, args.category, layout=args.layout)
    fitted = model.fitted_on.get("categories", [])
    if fitted and split.category not in fitted:
        raise CheckpointError(f"{args.checkpoint}: was fitted on category {', '.join(fitted)}, not "
                              f"{split.category}; pass --category {fitted[0]} or a checkpoint of {split.category}.")
    row = {"method": model.name, "category": split.category, **evaluate_method(model, split)}
    print(format_table([row]))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nbhelpers.report import render_report

    out = check_output_file(args.out, "--out", ours=_is_report, overwrite=True, kind="HTML report",
                            example="report.html")
    html = render_report(args.data, out, layout=args.layout, category=args.category, methods=args.method,
                         preset=args.preset, device=args.device, seed=args.seed, notebook=args.notebook)
    print(f"report written to {html}")
    return 0


def _is_report(path: Path) -> bool:
    """An HTML file (``nbhelpers report`` replaces an earlier report of its own, nothing else)."""
    with path.open("rb") as fh:
        head = fh.read(512).lstrip().lower()
    return path.suffix.lower() in (".html", ".htm") and head.startswith((b"<!doctype html", b"<html"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbhelpers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "synth", help="generate the offline SynthAD benchmark", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write SynthAD (deterministic from --seed) in the MVTec AD / MVTec LOCO AD layouts:\n"
                    "  texture  brick, grass, gravel        object  washer, screw, capsule\n"
                    "  logical  nuts    exactly 3 of 6 compartments hold a nut (missing / extra nut)\n"
                    "           kit     ring, bolt, cap, nut clockwise from any slot (swapped / duplicated part)\n"
                    "           cables  top and bottom cable share colour and gauge (mismatched colour / gauge)\n"
                    "Logical anomalies are made only of local appearances that occur in normal images; each logical\n"
                    "category also has a structural contamination. See data/README.md.")
    s.add_argument("--out", default="data/synthad")
    s.add_argument("--preset", default="cpu", help="size preset: smoke, cpu or paper")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--categories", nargs="*", default=None, help="names or kinds (texture, object, logical)")
    s.add_argument("--overwrite", action="store_true",
                   help="rewrite existing categories (categories of an older SynthAD version are always rewritten)")
    s.set_defaults(func=_cmd_synth)

    r = sub.add_parser("run", help="execute the notebooks with papermill and write reports/index.html")
    r.add_argument("--preset", default="cpu")
    r.add_argument("--data", default="data/synthad")
    r.add_argument("--notebooks", default="notebooks")
    r.add_argument("--out", default="reports")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 01")
    r.add_argument("--timeout", type=int, default=None, help="seconds per cell")
    r.set_defaults(func=_cmd_run)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--method", default="baseline")
        q.add_argument("--data", default="data/synthad")
        q.add_argument("--layout", default="auto")
        q.add_argument("--preset", default="cpu")
        q.add_argument("--device", default="auto")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
        q.add_argument("--seen-anomalies", type=int, default=None, help="real anomalies to train on (PRN)")

    b = sub.add_parser("bench", help="fit + evaluate methods on categories; print a table, write JSON")
    common(b)
    b.add_argument("--category", default="all", help="a category, a comma list, or 'all'")
    b.add_argument("--out", default="reports/bench",
                   help="rows <method>_<category>_<preset>_seed<seed>[_synthad-vN]_<digest>.json (the digest covers "
                        "the resolved config, device type, layout and data files), results.json/.md, checkpoints/")
    b.add_argument("--force", action="store_true", help="recompute rows whose JSON already exists")
    b.add_argument("--throughput", action="store_true",
                   help="inference images/s at --batch-sizes on the first category (model fitted for 1 epoch)")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128])
    b.set_defaults(func=_cmd_bench)

    t = sub.add_parser("train", help="fit a method on a category and save a checkpoint")
    common(t)
    t.add_argument("--category", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from its checkpoints in <out without suffix>.train/")
    t.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("predict", help="evaluate a saved checkpoint on a category's test split")
    common(pr)
    pr.add_argument("--category", required=True)
    pr.add_argument("--checkpoint", required=True)
    # method, preset and seed come from the checkpoint unless given (then they must agree with it)
    pr.set_defaults(func=_cmd_predict, method=None, preset=None, seed=None)
    rp = sub.add_parser("report", help="HTML report of methods on any dataset folder (papermill + nbconvert)")
    common(rp)
    rp.add_argument("--category", default="", help="a category, a comma list, or empty for all")
    rp.add_argument("--out", default="reports/report.html")
    rp.add_argument("--notebook", default=None, help="report notebook (default: notebooks/08_report.ipynb)")
    rp.set_defaults(func=_cmd_report)
    return p


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (e.g. a scheduler stopping the job) into ``KeyboardInterrupt`` while the block runs,
    so that it stops like Ctrl-C: cleanly, keeping every checkpoint written so far."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return args.func(args)
    except NbhelpersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: checkpoints written so far are kept; `nbhelpers train ... --resume` continues a "
              "training, `nbhelpers bench` (without --force) skips the finished runs.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
