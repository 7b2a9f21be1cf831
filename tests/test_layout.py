"""The repo's shape: imports run one way (data ← kernels ← optimizers ← runtime ← model ← train_gpt ← tools), no
import inside a function to dodge a cycle, no sys.path edits outside tests, nothing shadows the stdlib."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {  # a module may import from its own layer and the layers below it
    "data": 0, "kernels": 1, "optimizers": 2, "runtime": 3, "model": 4, "train_gpt": 5,
    "records": 6, "analysis": 6, "ablations": 7, "evals": 8, "bench": 8,
}


def repo_files():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in LAYERS or parts[0] in ("train_gpt.py", "model.py"):
            yield path, parts[0].removesuffix(".py")


def imported_packages(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, [node.module.split(".")[0]]


def test_imports_run_one_way():
    wrong = []
    for path, package in repo_files():
        for node, names in imported_packages(ast.parse(path.read_text())):
            for name in names:
                if name in LAYERS and LAYERS[name] > LAYERS[package]:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not wrong, "imports that run upwards:\n" + "\n".join(wrong)


def test_no_repo_imports_inside_functions():
    """A repo module imported inside a function is how cycles get dodged; import at the top instead."""
    inside = []
    for path, _ in repo_files():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node, names in imported_packages(func):
                    inside += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n in LAYERS]
    assert not inside, "repo imports inside functions:\n" + "\n".join(inside)


def test_no_sys_path_edits_outside_tests():
    edits = [f"{path.relative_to(ROOT)}" for path, _ in repo_files() if "sys.path" in path.read_text()]
    assert not edits, f"sys.path edited in {edits}; the repo is installed (pip install -e .)"


def test_no_module_shadows_the_standard_library():
    """`python data/x.py` puts data/ first on sys.path, where a file named like a stdlib module would win."""
    shadows = [f"{path.relative_to(ROOT)}" for path, _ in repo_files()
               if path.stem in sys.stdlib_module_names or (path.parent != ROOT and path.stem in LAYERS)]
    assert not shadows, f"{shadows} shadow the standard library or a repo package when run as scripts"
