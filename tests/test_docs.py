"""The docs say what the code does: every table re-renders from results/*.json unchanged (no number typed by hand),
and every command they show names a script and flags that exist."""
import json
import re

import pytest

import docs
from common import UserError
from conftest import ROOT, load_script



def test_docs_match_the_results_files():
    for doc in docs.DOCS:
        text = doc.read_text()
        assert docs.MARKER.search(text), f"{doc.name} has no report blocks"
        assert docs.render(text) == text, f"{doc.name} is out of date: run python experiments/report.py --write"


def test_every_committed_image_is_named_in_a_caption():
    figures = docs.figures()
    for image in (ROOT / "images").glob("*.png"):
        assert f"images/{image.name}" in figures, image.name


def test_the_llama_cpp_section_says_when_a_row_ran_without_llamas_extra_buffer_types(monkeypatch):
    record = json.loads((ROOT / "results" / "llama_cpp.json").read_text())
    record["gguf"]["q8_0"]["extra_buffer_types"] = "off: with them on, llama.cpp died of SIGSEGV"
    record["gguf"]["f32"]["extra_buffer_types"] = "on (llama.cpp's default)"
    monkeypatch.setattr(docs, "load", lambda name: record)
    text = docs.llama_cpp()
    assert "q8_0: llama.cpp's extra buffer types off: with them on, llama.cpp died of SIGSEGV" in text
    assert "f32: llama.cpp's extra buffer types" not in text


def test_an_ab_table_gives_every_arm_its_difference_to_the_first_and_no_size_where_arms_resize(monkeypatch):
    """experiments/ab.py with three arms of other widths: one column per arm, one paired difference per variant
    (matching its row of the results file), no single model size in the title, and where the clock stopped a run
    between evaluations, a last row pairing each run's final one; each arm's wall clock where the record keeps it;
    arms of other batch shapes, at equal tokens, each with its own steps."""
    record = json.loads((ROOT / "results" / "cpu_lr.json").read_text())
    base = record["arms"]["lr 1e-3"]
    record["arms"] = {"6x128": {**base, "overrides": {}}, "4x160": {**base, "overrides": {"n_layer": 4, "n_embd": 160}},
                      "3x184": {**base, "overrides": {"n_layer": 3, "n_embd": 184}}}
    record["table"] = [{"step": 100, "6x128": [2.0, 0.1], "4x160": [2.5, 0.1], "3x184": [1.5, 0.1],
                        "4x160 - 6x128": [0.5, 0.01], "3x184 - 6x128": [-0.5, 0.02]}]
    text = docs.ab_detail("cpu_width", record, list(record["arms"]), "wide")
    assert "| step | 6x128 | 4x160 | 3x184 | 4x160 − 6x128 | 3x184 − 6x128 |" in text
    assert "| 100 | 2.0000 ± 0.1000 | 2.5000 ± 0.1000 | 1.5000 ± 0.1000 | +0.5000 ± 0.0100 | -0.5000 ± 0.0200 |" in text
    assert "ModernGPT, 4800 steps" in text and "6L×128" not in text and "end of run" not in text
    cut = [curve[:-1] + [[4774, curve[-1][1] + 0.5]] for curve in base["curves"]]  # the clock stopped it 26 steps early
    record["arms"]["3x184"] = {**record["arms"]["3x184"], "curves": cut}
    text = docs.ab_detail("cpu_width", record, list(record["arms"]), "wide")
    assert text.split("\n\n")[1].splitlines()[-1].startswith(
        "| end of run (steps 4774–4800) | 1.4745 ± 0.0063 | 1.4745 ± 0.0063 | 1.9745 ± 0.0063 | +0.0000 ± 0.0000 | "
        "+0.5000 ± 0.0000 |")
    record["arms"], record["table"] = {"6x128": base, "lr": {**base, "overrides": {"lr": 2e-3}}}, []
    assert "ModernGPT 6L×128, 4800 steps" in docs.ab_detail("cpu_lr", record, ["6x128", "lr"], "lr")
    record["arms"]["lr"]["elapsed_s"] = [471.4, 6.2]  # records written since each arm's wall clock was kept
    text = docs.ab_detail("cpu_lr", record, ["6x128", "lr"], "lr")
    assert "training tokens/s, compiled, 471 ± 6 s a run, best val" in text and text.count("s a run") == 1
    record["arms"] = {"batch 32": {**base, "tokens_per_step": 2048},
                      "batch 16": {**base, "overrides": {"batch_size": 16, "max_steps": 9600}, "tokens_per_step": 1024}}
    record["table"] = [{"tokens": 9_830_400, "batch 32": [1.5, 0.01], "batch 16": [1.4, 0.01],
                        "batch 16 - batch 32": [-0.1, 0.01]}]
    text = docs.ab_detail("cpu_batch", record, list(record["arms"]), "batch")
    assert "| tokens | batch 32 | batch 16 | batch 16 − batch 32 |" in text and "| 9,830,400 | 1.5000" in text
    assert "- batch 16: 9600 steps of 1,024 tokens, " in text and "- batch 32: 4800 steps of 2,048 tokens, " in text
    assert "ModernGPT 6L×128, AMD" in text  # no single step count in the title


def test_the_readmes_project_structure_names_every_module_and_script():
    readme = (ROOT / "README.md").read_text()
    structure = readme[readme.index("## Project structure"):readme.index("## When things go wrong")]
    files = [*(ROOT / "src").glob("*.py"), *(ROOT / "src").glob("*.c"), *(ROOT / "training").glob("*.py"),
             *(ROOT / "experiments").glob("*.py"), *(ROOT / "colab").glob("*.py")]
    assert files
    named = set(re.findall(r"(?<![\w.])[\w.]+\.(?:py|c)\b", structure))  # bpe.py, not the tail of train_bpe.py
    missing = sorted(f"{path.parent.name}/{path.name}" for path in files if path.name not in named)
    assert not missing, f"README's project structure does not name {missing}"


def test_the_cpu_presets_table_has_a_row_for_every_run_of_a_preset_whatever_its_folder(monkeypatch, tmp_path):
    """A preset's run on another CPU (its own --out-dir, so its own results file) joins the table with its machine,
    its precision (and whether a flag forced it) and whether it met the target; a run with other settings, or of
    another architecture, does not, nor a CPU fp32 run without the preset's fp32 values (the training scripts lay
    them over such a run)."""
    from presets import PRESETS
    demo = json.loads((ROOT / "results" / "train_demo.json").read_text())
    assert demo["dtype"] == "bf16"
    other_cpu = {**demo, "hardware": "Other CPU (avx2)", "dtype": "fp32", "best_val_loss": 1.6760,
                 "time": "2030-01-01T00:00:00+00:00",
                 "model_config": {**demo["model_config"], **PRESETS["demo"].fp32_values}}
    longer = {**demo, "train_config": {**demo["train_config"], "max_steps": 99}}
    vanilla = {**demo, "architecture": "vanilla"}
    fp32_with_bf16_values = {**demo, "dtype": "fp32"}
    forced_fp32 = {**other_cpu, "hardware": "A bf16 CPU", "dtype_reason": "--dtype fp32 asked for",
                   "time": "2031-01-01T00:00:00+00:00"}
    for name, record in (("train_demo", demo), ("train_demo-other", other_cpu), ("train_x", longer),
                         ("train_y", vanilla), ("train_z", fp32_with_bf16_values), ("train_demo-forced", forced_fp32)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    monkeypatch.setattr(docs, "RESULTS", tmp_path)
    rows = [line for line in docs.cpu_recipes().splitlines() if line.startswith("| `--preset")]
    assert len(rows) == 3
    assert rows[0].endswith(f"| {demo['best_val_loss']:.4f} | ≤ 1.58 | yes | {demo['hardware']}, bf16, "
                            f"{demo['time'][:10]} |")
    assert rows[1].endswith("| 1.6760 | ≤ 1.58 | no | Other CPU (avx2), fp32, 2030-01-01 |")
    assert rows[2].endswith("| A bf16 CPU, fp32 (--dtype fp32), 2031-01-01 |")  # not what auto picks there


def test_the_reference_table_shows_our_runs_at_the_reference_config_beside_the_originals(monkeypatch, tmp_path):
    """A run at a training script's own defaults joins the table, whatever its folder, seed, --patience or precision,
    with its difference from the original's quoted figure; a preset's run, or one with any training setting
    changed, does not. Below the table, the command for each run still missing."""
    from dataclasses import asdict

    from cli import RUN_DEFAULTS
    monkeypatch.setattr(docs, "RESULTS", tmp_path)
    assert "None of our runs is at these configs yet" in docs.reference()
    model, train = RUN_DEFAULTS["modern"]
    modern = json.loads((ROOT / "results" / "train_modern.json").read_text())
    at_reference = {**modern, "model_config": {**asdict(model), "vocab_size": 65},
                    "train_config": {**asdict(train), "out_dir": "checkpoints/modern-reference", "seed": 7,
                                     "patience": 3, "dtype": "bf16"},
                    "params": 10_646_784, "best_val_loss": 1.4654, "best_step": 2500, "steps": 4000,
                    "hardware": "A GPU", "time": "2030-01-01T00:00:00+00:00"}
    shorter = {**at_reference, "train_config": {**at_reference["train_config"], "max_steps": 4999}}
    as_vanilla = {**at_reference, "architecture": "vanilla"}
    for name, record in (("train_modern", modern), ("train_modern-reference", at_reference),
                         ("train_x", shorter), ("train_y", as_vanilla)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    rows = [line for line in docs.reference().splitlines() if line.startswith("| modern")]
    assert len(rows) == 2 and "not our run" in rows[0] and "| 1.4754 | 2500 |" in rows[0]
    assert "| ours, seed 7, --patience 3 | 10,646,784 | 1.4654 (-0.0100) | 2500 of 4000 |" in rows[1]
    assert rows[1].endswith("| A GPU, bf16, compiled, 2030-01-01 |")
    assert not [line for line in docs.reference().splitlines() if line.startswith("| vanilla | ") and "ours" in line]
    assert "None of our runs" not in docs.reference()
    lacking = docs.reference().split("\n\n")[1]  # the run still missing, and only it, with its command
    assert lacking.startswith("No run of ours is at the other config yet")
    assert "training/train.py --out-dir checkpoints/vanilla-reference" in lacking and "train_modern" not in lacking


def test_a_damaged_results_file_is_named_in_one_line(monkeypatch, tmp_path):
    """A hand-edited or merge-damaged results file stops the rendering with its name, not a traceback."""
    monkeypatch.setattr(docs, "RESULTS", tmp_path)
    for text, needle in (("{bad", "train_x.json is not valid JSON"), ('{"run": "x"}', "it has no 'model_config'"),
                         ("[1]", "it holds no record of a run")):
        (tmp_path / "train_x.json").write_text(text)
        with pytest.raises(UserError, match=re.escape(needle)):
            docs.cpu_recipes()


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for each `python .../script.py ...` the docs show: lines of their fenced code blocks, whole
    inline code spans, and the usage lines of the scripts' own docstrings."""
    found = []
    for doc in ("README.md", "DEVLOG.md", "MODEL_CARD.md"):
        text = (ROOT / doc).read_text()
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        lines = [line for block in blocks for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", text)
        found += [(doc, line.strip()) for line in lines]
    for script in [*ROOT.glob("*/*.py"), ROOT / "publish.py"]:
        if script.parent.name != "tests":
            found += [(script.name, line.strip()) for line in script.read_text().splitlines()]
    return [(where, line) for where, line in found if re.match(r"(python3?|torchrun) .*\.py\b", line)]


class Parsed(Exception):
    pass


def test_every_command_the_docs_show_names_a_script_and_flags_that_exist(monkeypatch):
    """A renamed flag or script breaks a command the README shows without any test noticing: each documented command
    runs its script's main() up to the parse of its flags, which must succeed (a bad flag is a UserError)."""
    import shlex
    import common

    def parse_then_stop(parser, args=None, namespace=None):
        raise Parsed(parser_parse_args(parser, args, namespace))

    parser_parse_args = common.ArgumentParser.parse_args
    monkeypatch.setattr(common.ArgumentParser, "parse_args", parse_then_stop)
    commands = documented_commands()
    assert len(commands) > 40
    for where, command in commands:
        words = shlex.split(command, comments=True)
        script = next(word for word in words if word.endswith(".py"))
        assert (ROOT / script).is_file(), f"{where}: {command}: no {script}"
        args = words[words.index(script) + 1:]
        with pytest.raises(Parsed):
            try:
                load_script(ROOT / script).main(args)
            except UserError as err:
                raise AssertionError(f"{where}: {command}: {err}") from None


def test_every_source_file_and_test_the_docs_name_exists():
    """The docs point readers at files and tests (`tests/test_engine.py`, `test_full_disk_…`): each must exist, or the
    pointer leads nowhere after a rename. Results files are left out: the docs also name those a run will write."""
    prose = "\n".join((ROOT / doc).read_text() for doc in ("README.md", "DEVLOG.md", "MODEL_CARD.md"))
    paths = set(re.findall(r"(?<![\w/.])((?:src|tests|training|experiments|colab)/[\w./-]+\.(?:py|c|ipynb))", prose))
    assert len(paths) > 20
    assert not sorted(path for path in paths if not (ROOT / path).is_file())
    test_source = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    names = set(re.findall(r"\b(test_\w+?)(?:…|\b)", prose)) - {path.split("/")[-1][:-3] for path in paths}
    assert names
    assert not sorted(name for name in names if f"def {name}" not in test_source)


def imported_modules(path) -> set[str]:
    """Every top-level module a file imports, at its top or inside a function."""
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_imports_go_one_way_as_the_readme_says():
    """Scripts import only from src/ (never one another), src/ has no import cycle, and model.py knows nothing of
    engines or files."""
    library = {path.stem: path for path in (ROOT / "src").glob("*.py")}
    scripts = [*(ROOT / "training").glob("*.py"), *(ROOT / "experiments").glob("*.py"), *(ROOT / "colab").glob("*.py"),
               ROOT / "publish.py"]
    script_names = {path.stem for path in scripts}
    for script in scripts:
        assert not imported_modules(script) & (script_names - {script.stem}), script.name
    graph = {name: imported_modules(path) & set(library) - {name} for name, path in library.items()}

    def reaches(start, goal, seen=()):
        return any(dep == goal or (dep not in seen and reaches(dep, goal, (*seen, dep))) for dep in graph[start])

    assert not [name for name in graph if reaches(name, name)]
    assert not graph["model"] & {"engine", "checkpoint", "trainer", "data", "cli"}
