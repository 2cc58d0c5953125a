"""The project's imports point one way, down the floors of docs/design.md ("Layers"): a module
never imports from a floor above its own. Read from the source with `ast`, so the test needs no
import to succeed and fails on the first upward import anyone adds."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A module may import from its own floor and the floors below.
FLOORS = [
    {'common'},                                    # the error type, log formatting
    {'DataSet', 'losses'},                         # data sets and loaders; pair rules and forms
    {'models', 'evaluations'},                     # networks, meta-gradient; retrieval metrics
    {'trainer', 'trainer_MMSI', 'trainer_MMSI_SOP'},  # one iteration, one epoch
    {'utils'},                                     # flags, configuration, run assembly, output
    {'harness'},                                   # the comparison harness behind compare.py
    {'MMSI_train', 'MMSI_SOP_train', 'train', 'test', 'compare'},  # programs
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def project_modules():
    """(top-level name, path) of every project source file (tests and benchmarks aside)."""
    for entry in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, entry)
        if entry.endswith('.py') and entry != 'conftest.py':
            yield entry[:-3], path
        elif os.path.isdir(path) and os.path.exists(os.path.join(path, '__init__.py')):
            for folder, _, files in os.walk(path):
                for name in sorted(files):
                    if name.endswith('.py'):
                        yield entry, os.path.join(folder, name)


def imported_top_levels(path):
    tree = ast.parse(open(path, encoding='utf-8').read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split('.')[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split('.')[0], node.lineno


def test_every_project_module_has_a_floor():
    assert {name for name, _ in project_modules()} <= set(FLOOR)


def test_no_import_runs_up_a_floor():
    upward = [f'{os.path.relpath(path, ROOT)}:{line} imports {target}'
              for source, path in project_modules()
              for target, line in imported_top_levels(path)
              if target in FLOOR and FLOOR[target] > FLOOR[source]]
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The reader finds imports inside functions too (a lazy import is still a dependency)."""
    source = tmp_path / 'lazy.py'
    source.write_text('def f():\n    from utils.args import build_parser\n')
    assert list(imported_top_levels(str(source))) == [('utils', 2)]
