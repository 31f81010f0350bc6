"""The `xtc` command. Each subcommand's flags are generated from its config class.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""

import json
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import click
import yaml
from pydantic import BaseModel, ValidationError

from xtc.errors import XtcError, format_validation_error
from xtc.recipe import BenchConfig, EvalConfig, ExportConfig, FinetuneConfig, PredictConfig, RunConfig, SizeConfig

# Model hubs are never reached at run time unless the user opts in.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_BAD_INPUT = 2


def _plain_type(annotation):
    """``int | None`` -> int; Path stays Path."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def config_options(config_cls: type[BaseModel], positional: tuple[str, ...] = ()):
    """Decorator adding one click option per config field (flags are --field-name).

    Values are passed as strings/flags and validated by the config class, so a
    bad value gets the config's message, naming the field and the choices.
    """

    def decorate(command):
        fields = list(config_cls.model_fields.items())
        # --help lists the required flags first, then --model, then the rest as declared.
        fields.sort(key=lambda item: (not item[1].is_required(), item[0] != "model"))
        for name, field in reversed(fields):
            kind = _plain_type(field.annotation)
            flag = "--" + name.replace("_", "-")
            if name in positional:
                command = click.argument(name, required=True)(command)
            elif kind is bool:
                command = click.option(flag, name, is_flag=True, default=None, help=field.description)(command)
            else:
                default = None if field.is_required() else field.default
                repeat = bool((field.json_schema_extra or {}).get("repeatable"))
                shown_default = ",".join(map(str, default)) if isinstance(default, tuple) else default  # as typed: 16,32
                shown = f"  [default: {shown_default}]" if default not in (None, ()) else ""
                suffix = "  [required]" if field.is_required() else shown
                metavar = {int: "INT", float: "FLOAT", Path: "PATH"}.get(kind, "TEXT")
                command = click.option(flag, name, default=None, multiple=repeat, metavar=metavar,
                                       help=(field.description or "") + suffix)(command)
        return command

    return decorate


def build_config(config_cls: type[BaseModel], values: dict) -> BaseModel:
    given = {k: v for k, v in values.items() if v not in (None, ())}
    try:
        return config_cls(**given)
    except ValidationError as e:
        raise XtcError(format_validation_error(e)) from None


# The packages of the `train` extra: a command that needs one, on the base (inference) install,
# is told how to get them instead of failing with a traceback.
TRAIN_EXTRA = ("torch", "transformers", "datasets", "accelerate", "matplotlib")


class XtcGroup(click.Group):
    """Turns XtcError into one line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except XtcError as e:
            click.echo(f"xtc: error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ModuleNotFoundError as e:
            if e.name not in TRAIN_EXTRA:
                raise
            click.echo(f"xtc: error: this command needs {e.name}, which the base install (packed models only) "
                       "does not bring: pip install 'xtc[train]'", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("xtc: interrupted", err=True)
            sys.exit(130)


@click.group(cls=XtcGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="xtc", prog_name="xtc")  # read when asked, not at every start
def main():
    """xtc: extreme compression of BERT-family encoders (XTC, NeurIPS 2022)."""


def _format_metrics(results: dict[str, dict[str, float]]) -> str:
    lines = []
    for split, metrics in results.items():
        shown = "  ".join(f"{k} {v * 100:.2f}" for k, v in metrics.items() if k != "score")
        lines.append(f"{split}: {shown}")
    return "\n".join(lines)


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def relaunch_in_processes(command: str, config: BaseModel, values: dict) -> bool:
    """With --num-processes N > 1, outside a launcher: run this same command in N data-parallel
    processes through Accelerate's launcher (gloo on CPUs), and return True when they are done."""
    processes = getattr(config, "num_processes", 1)
    if processes <= 1 or "WORLD_SIZE" in os.environ:
        return False
    argv = [command]
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value in (None, (), False):
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "xtc", *argv]
    result = subprocess.run(launcher)
    if result.returncode != 0:
        raise XtcError(f"the {processes} training processes failed (exit code {result.returncode}); see above")
    return True


@main.command()
@config_options(FinetuneConfig)
def finetune(**values):
    """Fine-tune a full-precision teacher on a GLUE task."""
    config = build_config(FinetuneConfig, values)
    from xtc.train import finetune as run

    if relaunch_in_processes("finetune", config, values):
        return
    metrics = run(config)
    if not _is_main_process():
        return
    click.echo(f"{metrics['task']} best dev (step {metrics['best_step']}, {metrics['wall_time_s']:.0f} s):")
    click.echo(_format_metrics(metrics["dev"]))
    if metrics.get("degenerate"):
        click.echo(f"warning: degenerate: {metrics['degenerate']} on dev; train longer or check the data", err=True)
    click.echo(f"model folder: {config.out}")


@main.command(name="eval")
@config_options(EvalConfig, positional=("model",))
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def eval_(as_json: bool, **values):
    """Score a fine-tuned model folder on a GLUE split.

    A packed folder runs on the packed engine. A quantized stage folder that the engine can run is
    scored with the engine's float arithmetic (the same 8-bit codes), so it scores what its packed
    export scores; that is slower than torch's own order (RTE dev, 6 layers: 90 s against 15 s)."""
    config = build_config(EvalConfig, values)  # bad flags fail before the imports below (seconds)
    from xtc.engine import engine_for

    engine = engine_for(config.model)
    if engine is not None:  # a packed folder: the torch-free engine
        from xtc.packed_eval import evaluate_packed

        results = evaluate_packed(engine, config)
    else:
        from xtc.evaluation import evaluate

        results = evaluate(config)
    click.echo(json.dumps(results, indent=2) if as_json else _format_metrics(results))


@main.command()
@config_options(RunConfig)
def run(**values):
    """Run a recipe: teacher -> layer-reduced student -> 1-/2-bit student, one KD stage each."""
    from xtc.data.tasks import get_task
    from xtc.preflight import check_run

    config = build_config(RunConfig, values)
    recipe = check_run(config)  # every problem found before any work, in well under a second
    if config.dry_run:
        click.echo(yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True), sort_keys=False).rstrip())
        click.echo(f"# {len(recipe.stages)} stages checked against {config.teacher or config.model}; nothing trained "
                   "(--dry-run)")
        return
    if relaunch_in_processes("run", config, values):
        return
    from xtc.pipeline import format_table, run_recipe

    rows = run_recipe(config, recipe)
    if not _is_main_process():
        return
    click.echo(format_table(rows, get_task(config.task)))
    click.echo(f"stage folders: {config.out}/<stage>   (xtc eval {config.out}/<stage> --task {config.task})")


@main.command()
@config_options(ExportConfig, positional=("model",))
def export(**values):
    """Write a quantized model as a packed file (1-/2-bit weights, nothing pickled) or a plain HF checkpoint."""
    config = build_config(ExportConfig, values)
    from xtc.compression import export as write
    from xtc.size import size_report

    if config.format == "hf":
        from xtc.hf_export import export_hf

        out = export_hf(config.model, config.out)
        click.echo(f"wrote {out}: a dequantized transformers checkpoint (AutoModelForSequenceClassification loads it)")
        return
    if config.format == "onnx":
        from xtc.hf_export import export_onnx

        out = export_onnx(config.model, config.out)
        click.echo(f"wrote {out / 'model.onnx'}: the dequantized model for ONNX Runtime")
        return
    out = write(config.model, config.out, ternary=config.ternary_packing, int8_tensors=config.int8, kept=config.kept)
    report = size_report(out)
    click.echo(f"wrote {out}: {report['total'] / 1e6:.2f} MB ({report['fp32'] / report['total']:.1f}x smaller than FP32)")


@main.command()
@config_options(SizeConfig, positional=("model",))
@click.option("--json", "as_json", is_flag=True, help="print the sizes as JSON")
def size(as_json: bool, **values):
    """Size of a model by tensor group, and its ratio to the FP32 checkpoint."""
    from xtc.size import size_report

    config = build_config(SizeConfig, values)
    report = size_report(resolve_folder(config.model))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for group, n in report["groups"].items():
        click.echo(f"{group:<18} {n / 1e6:9.3f} MB")
    click.echo(f"{'total':<18} {report['total'] / 1e6:9.3f} MB   FP32 {report['fp32'] / 1e6:.3f} MB   "
               f"ratio {report['fp32'] / report['total']:.1f}x")


@main.command(name="predict")
@config_options(PredictConfig, positional=("model",))
@click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of TSV")
def predict_(as_json: bool, **values):
    """Labels and scores for raw text: --text (and --text-pair), or --input FILE.tsv."""
    from xtc.text import read_inputs

    config = build_config(PredictConfig, values)
    examples = (read_inputs(config.input) if config.input is not None
                else list(zip(config.text, config.text_pair)) if config.text_pair else [(t,) for t in config.text])
    from xtc.predict import predict  # after every input check: its imports take seconds
    for example, result in zip(examples, predict(config.model, examples, config.batch_size, config.max_seq_length)):
        if as_json:
            click.echo(json.dumps({"text": example, **result}))
        else:
            click.echo(f"{result['label'] if result['label'] is not None else ''}\t{result['score']:.4f}")


@main.command()
@config_options(BenchConfig, positional=("model",))
@click.option("--json", "as_json", is_flag=True, help="print the machine, the model and every row as JSON")
def bench(as_json: bool, **values):
    """Latency percentiles, throughput and peak memory of a packed model, per thread count, batch size and
    sequence length (random token ids; the torch-free engine)."""
    config = build_config(BenchConfig, values)
    from xtc.bench import bench as run, format_table  # after the flag checks: numpy and the engine load

    result = run(config)
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@main.command()
@click.argument("study_file", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="study folder (results.jsonl, cells/, teachers/)")
@click.option("--jobs", default=1, type=click.IntRange(min=1), show_default=True, help="cells run in parallel")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="threads per cell  [default: the cores shared among the jobs]")
@click.option("--glue-dir", type=click.Path(), default=None, help="GLUE folder (default: $XTC_GLUE_DIR, else the hub)")
def study(study_file: str, out: str, jobs: int, threads: int | None, glue_dir: str | None):
    """Run a study: a grid of recipe settings x tasks, resumable, one record per cell. Several processes
    may share one --out: each cell is claimed by one of them."""
    from xtc.study.runner import read_results, run_study

    records = run_study(study_file, out, jobs, glue_dir, threads)
    failed = [r for r in records if r["status"] != "ok"]
    total = len(read_results(Path(out)))
    click.echo(f"this run: {len(records) - len(failed)} cells finished, {len(failed)} failed; "
               f"{total} records in {out}/results.jsonl (xtc report {out})")


@main.command()
@click.argument("folder", type=click.Path())
def report(folder: str):
    """Write a study's report: Markdown and HTML tables (mean ± std over seeds) and plots."""
    from xtc.study.report import write_report

    path = write_report(folder)
    click.echo(f"wrote {path} and {path.with_suffix('.html')} (plots in {path.parent / 'plots'})")


def resolve_folder(model: str) -> Path:
    folder = Path(model)
    if not folder.is_dir():
        raise XtcError(f"model folder {model!r} does not exist")
    return folder
