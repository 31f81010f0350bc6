"""`xtc report DIR`: tables (mean ± std over seeds) and plots of a study's results.

Writes ``DIR/report.md``, ``DIR/report.html`` and ``DIR/plots/*.png``:

- one table per task: each setting of the grid (seeds pooled), the task's metrics
  as mean ± std over seeds, the number of seeds, the packed size and the wall time;
- for every grid key, the headline metric against its values, one line per task
  and bit width, averaged over the other keys (error bars: std over those cells);
- the metric against the packed size of every cell, with the Pareto front;
- "Effects": for every grid key, the headline score at each of its values (mean ± std over
  seeds, per task and over tasks) and its difference from the reference value (the center's,
  else the first), with the other keys as in the plots: the answer to "does this choice help".
"""

import html
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from xtc.data.tasks import get_task
from xtc.errors import XtcError
from xtc.study.config import StudyConfig, cells
from xtc.study.runner import STUDY_FILE, read_results


def _label(value) -> str:
    if isinstance(value, dict) and isinstance(value.get("rules"), list):
        return _quant_label(value)
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


def _quant_label(config: dict) -> str:
    """A quantization config in a few words: each rule's modules (the last names of its pattern), bits and
    granularity, e.g. 'linears W1/tensor A8; embeddings.word_embeddings W2/row; pooler.dense W8/row'."""
    parts = []
    for rule in config["rules"]:
        pattern = str(rule.get("pattern", ""))
        names = "linears" if "query" in pattern and "output" in pattern else " + ".join(  # drop the base model
            part.replace("\\.", ".").split(".", 1)[-1] for part in pattern.split("|"))
        acts = f" A{rule['act_bits']}" if rule.get("act_bits") else ""
        parts.append(f"{names} W{rule.get('weight_bits') or 32}/{rule.get('granularity', 'tensor')}{acts}")
    return "; ".join(parts) + (f"; kept {config['kept']}" if config.get("kept") else "")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def latest_records(folder: Path) -> list[dict]:
    """The last record of every cell (a retried cell's earlier failure is superseded)."""
    latest = {}
    for record in read_results(folder):
        latest[record["cell"]] = record
    return list(latest.values())


def _tables(records: list[dict], keys: list[str]) -> list[str]:
    lines = []
    for task in dict.fromkeys(r["task"] for r in records):
        metrics = list(get_task(task).metrics)
        groups = defaultdict(list)
        for r in records:
            if r["task"] == task and r["status"] == "ok":
                groups[tuple(_label(r["settings"].get(k)) for k in keys)].append(r)
        rows = []
        for setting, rs in groups.items():
            stats = [_mean_std([r["dev"][m] * 100 for r in rs]) for m in metrics]
            score = statistics.fmean(r["dev"]["score"] for r in rs)
            rows.append((score, setting, stats, rs))
        lines += [f"\n### {task}\n", "| " + " | ".join(keys + metrics) + " | seeds | bits | size (MB) | wall time |",
                  "|" + "---|" * (len(keys) + len(metrics) + 4)]
        for _, setting, stats, rs in sorted(rows, key=lambda row: -row[0]):
            cells = [f"{m:.2f} ± {s:.2f}" for m, s in stats]
            wall = statistics.fmean(r["wall_time_s"] for r in rs) / 60
            lines.append("| " + " | ".join([*setting, *cells]) + f" | {len(rs)} | {rs[0]['bits']} | "
                         f"{rs[0]['size_mb']:.2f} | {wall:.1f} min |")
    return lines


def _effects(records: list[dict], key: str, co_keys: list[str], reference) -> list[str]:
    """One table for ``key``: a row per task (and per setting of the keys varied with it), a column
    per value of ``key``: score mean ± std over seeds, and the difference from ``reference``."""
    raw = list(dict.fromkeys(json.dumps(r["settings"].get(key)) for r in records))
    if all(isinstance(json.loads(v), (int, float)) for v in raw):
        raw.sort(key=json.loads)  # numeric values ascending; others in the order they were run
    values = [_label(json.loads(v)) for v in raw]
    reference = _label(reference) if _label(reference) in values else values[0]
    by_row = defaultdict(lambda: defaultdict(list))  # (task, co-key values) -> value -> scores over seeds
    for r in records:
        row = (r["task"], *(_label(r["settings"].get(k)) for k in co_keys))
        by_row[row][_label(r["settings"].get(key))].append(r["dev"]["score"] * 100)
    means = {}  # co-key values -> value -> per-task means (for the mean-over-tasks row)
    lines = [f"\n### {key}" + (f" (with {', '.join(co_keys)})" if co_keys else "") + "\n",
             (f"Reference: {key} = {reference}; each cell: mean ± std over seeds (number of seeds), difference "
              "from the reference.\n"),
             "| task | " + "".join(f"{k} | " for k in co_keys) + " | ".join(values) + " | best |",
             "|" + "---|" * (len(co_keys) + len(values) + 2)]

    def row_line(name: str, co: tuple, stats: dict) -> str:
        base = stats.get(reference, (None,))[0]
        cells = []
        for v in values:
            if v not in stats:
                cells.append("-")
                continue
            mean, std, n = stats[v]
            delta = "" if base is None or v == reference else f" ({mean - base:+.2f})"
            cells.append(f"{mean:.2f}" + (f" ± {std:.2f} ({n})" if n else "") + delta)
        best = max(stats, key=lambda v: stats[v][0])
        return f"| {name} | " + "".join(f"{c} | " for c in co) + " | ".join(cells) + f" | {best} |"

    for (task, *co), scores in by_row.items():
        stats = {v: (*_mean_std(xs), len(xs)) for v, xs in scores.items()}
        for v, (mean, _, _) in stats.items():
            means.setdefault(tuple(co), {}).setdefault(v, {})[task] = mean
        lines.append(row_line(task, tuple(co), stats))
    tasks = list(dict.fromkeys(r["task"] for r in records))
    if len(tasks) > 1:
        for co, per_value in means.items():
            complete = {v: statistics.fmean(m.values()) for v, m in per_value.items() if len(m) == len(tasks)}
            if complete:
                lines.append(row_line(f"mean over {len(tasks)} tasks", co, {v: (m, 0.0, 0) for v, m in complete.items()}))
    return lines


def _axes():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def _save(fig, ax, out: Path) -> None:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_key(records: list[dict], key: str, out: Path):
    values = list(dict.fromkeys(_label(r["settings"].get(key)) for r in records))
    # a flag is not a number (bool is an int to isinstance): its values are categories, like a recipe's name
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (r["settings"].get(key) for r in records))
    fig, ax = _axes()
    for (task, bits) in dict.fromkeys((r["task"], r["bits"]) for r in records):
        points = []
        for i, value in enumerate(values):
            scores = [r["dev"]["score"] * 100 for r in records
                      if r["task"] == task and r["bits"] == bits and _label(r["settings"].get(key)) == value]
            if scores:
                x = float(value) if numeric else i
                points.append((x, *_mean_std(scores)))
        if points:
            xs, means, stds = zip(*sorted(points))
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{task} {bits}")
    if numeric:
        xs = sorted(float(v) for v in values)
        if min(xs) > 0 and max(xs) / min(xs) >= 3:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    else:
        # a recipe file's name, not its whole path: long paths run off the figure
        ticks = [Path(v).stem if v.endswith((".yaml", ".yml")) else v for v in values]
        ax.set_xticks(range(len(values)), ticks, rotation=15, fontsize=8)
        ax.set_xmargin(0.15)
    ax.set_xlabel(key)
    ax.set_ylabel("dev score")
    ax.set_title("mean ± std over seeds (and the other settings)", fontsize=9)
    _save(fig, ax, out)


def _plot_pareto(records: list[dict], out: Path):
    fig, ax = _axes()
    for task in dict.fromkeys(r["task"] for r in records):
        points = sorted((r["size_mb"], r["dev"]["score"] * 100) for r in records if r["task"] == task)
        ax.scatter(*zip(*points), s=18, alpha=0.6, label=task)
        front, best = [], -math.inf
        for size, score in points:  # smallest size first: keep what beats everything smaller
            if score > best:
                front.append((size, score))
                best = score
        ax.plot(*zip(*front), linestyle="--", linewidth=1)
    ax.set_xlabel("packed size (MB)")
    ax.set_ylabel("dev score")
    ax.set_title("metric vs size (dashed: Pareto front)")
    _save(fig, ax, out)


def write_report(folder: str | Path) -> Path:
    folder = Path(folder)
    if not (folder / STUDY_FILE).is_file():
        raise XtcError(f"{folder} is not a study folder (no {STUDY_FILE}); run xtc study first")
    study = json.loads((folder / STUDY_FILE).read_text())
    records = latest_records(folder)
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        raise XtcError(f"{folder}: no finished cell to report yet")
    config = StudyConfig.model_validate(study)
    keys = [k for k in config.grid_keys() if k != "seed"]
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    images, effects = [], []
    for key in keys:
        # one-factor sub-grids: plot a key over the cells that hold every other key at its center value,
        # except keys varied together with it in a sub-grid (e.g. budget x bits: one line per bit width)
        together = {k for sub in (config.grids or {}).values() if key in sub for k in sub}
        others_at_center = [r for r in ok if all(_label(r["settings"].get(k)) == _label(v)
                                                   for k, v in config.center.items() if k not in together | {key})]
        if len({_label(r["settings"].get(key)) for r in others_at_center}) > 1:
            effects += _effects(others_at_center, key, sorted(together - {key}), config.center.get(key))
            name = f"by_{key.replace('.', '_')}.png"
            _plot_key(others_at_center, key, plots / name)
            images.append((f"dev score by {key}", f"plots/{name}"))
    _plot_pareto(ok, plots / "pareto.png")
    images.append(("dev score vs packed size", "plots/pareto.png"))

    failed = [r for r in records if r["status"] != "ok"]
    lines = [f"# Study report: {study.get('description') or folder.name}\n",
             (f"Model {study['model']}, base recipe `{study['recipe']}`, tasks {', '.join(study['tasks'])}; "
              f"{len(ok)} of {len(cells(config))} cells finished, {len(failed)} failed. Metrics are GLUE dev, x100, "
              "mean ± std over seeds." + _commits(ok)),
             "\n## Effects\n", *effects, "\n## Every setting\n", *_tables(ok, keys), "\n## Plots\n"]
    lines += [f"![{title}]({path})\n" for title, path in images]
    if failed:
        lines += ["\n## Failed cells\n", "| cell | error |", "|---|---|"]
        lines += [f"| {r['cell']} | {r['error'].replace('|', '/')} |" for r in failed]
    markdown = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(markdown)
    (folder / "report.html").write_text(_html(markdown, study.get("description") or folder.name))
    return folder / "report.md"


def _commits(records: list[dict]) -> str:
    """Which xtc code ran the cells (records from before the field have none)."""
    commits = list(dict.fromkeys(r["xtc_commit"] for r in records if r.get("xtc_commit")))
    unknown = sum(not r.get("xtc_commit") for r in records)
    if not commits:
        return ""
    return (f" Cells run by xtc commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}"
            + (f" ({unknown} recorded without their commit)." if unknown else "."))


def _html(markdown: str, title: str) -> str:
    """The Markdown report as a standalone HTML page (tables, headings, images)."""
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><tr>{head}</tr>{rest}</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
