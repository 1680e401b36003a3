"""No number in the docs is typed by hand: every table re-renders from results/*.json unchanged."""
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
