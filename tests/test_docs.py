"""No number in the docs is typed by hand: every table re-renders from results/*.json unchanged."""
import json
import re

from conftest import ROOT, load_script

report = load_script(ROOT / "experiments" / "report.py")


def test_docs_match_the_results_files():
    for doc in report.DOCS:
        text = doc.read_text()
        assert report.MARKER.search(text), f"{doc.name} has no report blocks"
        assert report.render(text) == text, f"{doc.name} is out of date: run python experiments/report.py --write"


def test_every_committed_image_is_named_in_a_caption():
    figures = report.figures()
    for image in (ROOT / "images").glob("*.png"):
        assert f"images/{image.name}" in figures, image.name


def test_the_llama_cpp_section_says_when_a_row_ran_without_llamas_extra_buffer_types(monkeypatch):
    record = json.loads((ROOT / "results" / "llama_cpp.json").read_text())
    record["gguf"]["q8_0"]["extra_buffer_types"] = "off: with them on, llama.cpp died of SIGSEGV"
    record["gguf"]["f32"]["extra_buffer_types"] = "on (llama.cpp's default)"
    monkeypatch.setattr(report, "load", lambda name: record)
    text = report.llama_cpp()
    assert "q8_0: llama.cpp's extra buffer types off: with them on, llama.cpp died of SIGSEGV" in text
    assert "f32: llama.cpp's extra buffer types" not in text


def test_the_readmes_project_structure_names_every_module_and_script():
    readme = (ROOT / "README.md").read_text()
    structure = readme[readme.index("## Project structure"):readme.index("## When things go wrong")]
    files = [*(ROOT / "src").glob("*.py"), *(ROOT / "src").glob("*.c"), *(ROOT / "training").glob("*.py"),
             *(ROOT / "experiments").glob("*.py"), *(ROOT / "colab").glob("*.py")]
    assert files
    named = set(re.findall(r"(?<![\w.])[\w.]+\.(?:py|c)\b", structure))  # bpe.py, not the tail of train_bpe.py
    missing = sorted(f"{path.parent.name}/{path.name}" for path in files if path.name not in named)
    assert not missing, f"README's project structure does not name {missing}"
