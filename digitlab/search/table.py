"""Experiments side by side in a terminal's width: each one's name, the params that differ, the headline metrics.

`dvc exp show` prints every column and cuts them to fit: at 120 columns it shows `Experi…  test.…  …  …`.
This prints, from `dvc.api.exp_show()`, only the params that differ between the experiments listed and a
few headline metrics, whole, with the short name of each param where that is unambiguous:

    python -m digitlab.search.table [--metrics eval.accuracy test.accuracy test.errors]
"""

import argparse
import shutil
import textwrap

import yaml

HEADLINE = ("eval.accuracy", "test.accuracy", "test.errors")


def flat_keys(data: dict, prefix: str = "") -> list[str]:
    """params.yaml's keys, dotted: train.augment.shear."""
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys += flat_keys(value, f"{dotted}.") if isinstance(value, dict) else [dotted]
    return keys


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 10 else f"{value:.4g}"
    return str(value)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part (dense_units), or by more of it where two keys share a last part."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            name = ".".join(parts[-length:])
            if sum(other.endswith(name) for other in keys) == 1:
                break
        names[key] = name
    return names


def table(rows: list[dict], params: list[str], metrics: list[str], width: int) -> str:
    """The experiments of `rows` (dvc.api.exp_show's) with the params that differ and `metrics`."""
    shown = [row for row in rows if row.get("typ") != "workspace"]
    changed = [key for key in params if len({repr(row.get(key)) for row in shown}) > 1]
    names = short_names(changed)
    header = ["experiment", *(names[key] for key in changed), *metrics]
    body = [
        [
            row.get("Experiment") or row.get("rev") or "-",
            *(cell(row.get(key)) for key in changed),
            *(cell(row.get(metric)) for metric in metrics),
        ]
        for row in shown
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) > width and changed:
        # Too wide for a column per param: one column of "name=value" for the params that differ, wrapped
        # onto more lines where the terminal is narrow; names and metrics stay whole on the first line.
        fixed = [widths[0], *widths[1 + len(changed) :]]
        room = max(width - sum(fixed) - 2 * len(fixed), 20)
        header, wrapped = ["experiment", "changed", *metrics], []
        for line in body:
            pairs = " ".join(f"{names[key]}={value}" for key, value in zip(changed, line[1 : 1 + len(changed)]))
            parts = textwrap.wrap(pairs, room, break_long_words=False, break_on_hyphens=False) or [""]
            wrapped.append([line[0], parts[0], *line[1 + len(changed) :]])
            wrapped += [["", part, *[""] * len(metrics)] for part in parts[1:]]
        body = wrapped
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(size) for text, size in zip(line, widths)).rstrip() for line in [header, *body]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--metrics", nargs="+", default=list(HEADLINE), help="the metrics shown (default: " + " ".join(HEADLINE) + ")"
    )
    args = parser.parse_args(argv)
    import dvc.api

    rows = dvc.api.exp_show()  # HEAD's experiments, as `dvc exp show` lists them
    with open("params.yaml") as file:
        params = flat_keys(yaml.safe_load(file))
    print(table(rows, params, args.metrics, shutil.get_terminal_size().columns))


if __name__ == "__main__":
    main()
