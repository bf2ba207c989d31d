"""The layout stays readable: no import circle between mto's modules, no module that grows past one job's
size (data tables excepted), and a new objective is its module plus its YAML."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mto"
MAX_LINES = 370  # "about 350"
DATA_TABLES = {"mto/tasks/synthetic.py", "mto/config.py"}  # the synthetic world's vocabulary; the schema


def module_imports() -> dict[str, set[str]]:
    """mto module -> the mto modules it imports at module level (TYPE_CHECKING blocks excluded)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mto"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mto")}
        graph[name] = {d for d in deps if d in names and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in stack:
                found.append(stack[stack.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep, stack + [dep])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])
    return found


def test_no_import_circle():
    graph = module_imports()
    assert "mto.stages.steps" in graph and "mto.matching" in graph["mto.stages.steps"]
    assert cycles(graph) == []
    # the check itself can fail: a circle added on purpose is found
    assert cycles({**graph, "mto.matching": graph["mto.matching"] | {"mto.stages.steps"}})


def test_modules_stay_small():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    too_large = {p: n for p, n in sizes.items() if n > MAX_LINES and p not in DATA_TABLES}
    assert too_large == {}


OBJECTIVE_MODULE = """
from mto.objectives import OBJECTIVES


@OBJECTIVES.register("reverse_words")
class ReverseWords:
    name = "reverse_words"

    def __init__(self, cfg):
        self.input_length = cfg.input_length

    @staticmethod
    def validate(cfg):
        pass

    def features(self, material, tokenizer, rng):
        return [" ".join(reversed(text.split())) for text in material.texts]
"""


def test_a_new_objective_is_its_module_and_its_yaml(tmp_path, monkeypatch):
    """An objective written as one module of the mto.objectives package plus one YAML of the objective
    group is found by name, composed, validated and built: no other file is touched. (The module and the
    YAML are put in temporary folders added to the package's and to Hydra's search paths.)"""
    import mto.objectives as objectives
    from mto.config import conf_dir, typed

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "reverse_words.py").write_text(OBJECTIVE_MODULE)
    (tmp_path / "conf" / "objective").mkdir(parents=True)
    (tmp_path / "conf" / "objective" / "reverse_words.yaml").write_text("name: reverse_words\n")
    objectives.OBJECTIVES.names()  # the shipped objectives register into the real table before it is swapped
    monkeypatch.setattr(objectives, "__path__", [*objectives.__path__, str(tmp_path / "pkg")])
    monkeypatch.setattr(objectives, "OBJECTIVES", objectives.Registry("objective", "mto.objectives"))
    monkeypatch.delitem(sys.modules, "mto.objectives.reverse_words", raising=False)
    importlib.invalidate_caches()

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
        cfg = typed(compose(config_name="adapt", overrides=[search, "objective=reverse_words"]))
    objective = objectives.get_objective(cfg.objective)
    assert "reverse_words" in objectives.OBJECTIVES.names()
    assert objective.features(objectives.Material(texts=["a b c"]), None, None) == ["c b a"]
    sys.modules.pop("mto.objectives.reverse_words", None)
