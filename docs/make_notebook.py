#!/usr/bin/env python3
"""Write docs/tutorial.ipynb: the tutorial as a notebook a student runs cell by cell.

    python docs/make_notebook.py [--check]

Same source as docs/tutorial.md: the text is docs/tutorial_template.md cut
at its "## " sections, with the numbers of the run that wrote tutorial.md
(read back by matching the template against it, so the notebook never
needs a run of its own to be written); before each section a code cell
runs that section's part of docs/make_tutorial.py, in make_tutorial's own
order (its runs share random streams), and prints what it measures, so
the student sees this machine's numbers beside the published ones.  The
figures a run draws go to a scratch directory; the text shows the
published ones.  --check: fail if docs/tutorial.ipynb is not what this
script writes (the notebook cannot drift from the tutorial).
"""
import argparse
import os
import re
import sys

import nbformat

DOCS = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(DOCS, "tutorial_template.md")
TUTORIAL = os.path.join(DOCS, "tutorial.md")
NOTEBOOK = os.path.join(DOCS, "tutorial.ipynb")

SETUP = '''\
# Run from docs/ (where this notebook lives), with ../../shared beside the repository, as
# docs/make_tutorial.py expects. One BLAS thread keeps the runs repeatable.
import os, sys, tempfile, types
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.abspath("."))
import make_tutorial as mt

work = tempfile.mkdtemp(prefix="npcaffe-tutorial-")
mt.FIGURES = os.path.join(work, "figures")  # this run's figures; the text shows the published ones
os.makedirs(mt.FIGURES)
mt.glog.set_quiet(True)
s = mt.Setup(types.SimpleNamespace(shared=os.path.join(mt.ROOT, "..", "shared"), lmdb=None, mnist=None,
                                   work=work))'''

# The code cell before each section ("## N." of the template): make_tutorial.main's calls, in its order.
CODE = {
    "1": "# LeNet-300-100, 2,000 iterations with a trace (sections 1-2), and the resume of section 7\n"
         "solver, hist = mt.section_lenet300100(s)\nmt.section_resume(s, solver)",
    "3": "mt.section_splicing(s, hist)",
    "4": "acc_uniform5 = mt.section_sweep(s)\n"
         "mt.claim(acc_uniform5 < hist['accuracy'][5], '5 / 3 / 3 does better than a uniform c_rate 5')",
    "5": "mt.section_gate(s)",
    "6": "mt.section_lenet5(s)",
    "7": "mt.section_fillers(s)",
}


def published_values(template, tutorial):
    """{field: text} of the run that wrote tutorial.md: the template as a pattern matched against it."""
    seen = set()

    def field(match):
        name = match.group(1)
        if name in seen:
            return f"(?P={name})"
        seen.add(name)
        return f"(?P<{name}>.*?)"
    parts = re.split(r"(\{\{\w+\}\})", template)
    pattern = "".join(field(re.match(r"\{\{(\w+)\}\}", p)) if p.startswith("{{") else re.escape(p) for p in parts)
    match = re.fullmatch(pattern, tutorial, re.S)
    if match is None:
        raise SystemExit("make_notebook: docs/tutorial.md does not follow docs/tutorial_template.md; "
                         "run python docs/make_tutorial.py first")
    return match.groupdict()


def sections(text):
    """[(number or None, markdown)] cut before each '## N.' heading."""
    pieces = re.split(r"(?m)^(?=## \d+\.)", text)
    return [(re.match(r"## (\d+)\.", p).group(1) if p.startswith("## ") else None, p.strip("\n")) for p in pieces]


def build():
    with open(TEMPLATE) as f:
        template = f.read()
    with open(TUTORIAL) as f:
        tutorial = f.read()
    values = published_values(template, tutorial)
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    text = re.sub(r"<!--.*?-->\n?", "", text, flags=re.S)  # the note on how tutorial.md is made
    cells = []
    for number, markdown in sections(text):
        if number is None:
            cells.append(nbformat.v4.new_markdown_cell(
                markdown + "\n\nThis notebook is that tutorial to run cell by cell (written by "
                "`docs/make_notebook.py` from the same template). Each code cell reruns the measurements of the "
                "section below it and prints them; the text keeps the published numbers to compare with."))
            cells.append(nbformat.v4.new_code_cell(SETUP))
            continue
        if number in CODE:
            cells.append(nbformat.v4.new_code_cell(CODE[number]))
        cells.append(nbformat.v4.new_markdown_cell(markdown))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i}"  # stable ids: the file changes only when the tutorial does
    return notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/tutorial.ipynb is out of date")
    args = parser.parse_args(argv)
    text = nbformat.writes(build())
    if args.check:
        with open(NOTEBOOK) as f:
            if f.read() != text:
                raise SystemExit("docs/tutorial.ipynb is out of date: run python docs/make_notebook.py")
        return 0
    with open(NOTEBOOK, "w") as f:
        f.write(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
