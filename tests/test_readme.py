"""The README and docs/ as a newcomer uses them: every relative link resolves, and the README's ten-line Python
example runs against the kit's real API (its training and evaluation calls are bound to the real signatures and
recorded rather than run, so the example cannot drift from the functions it names)."""

import inspect
import re
from pathlib import Path

import pytest

import sdft_core.eval.evaluate
import sdft_core.train

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    """Link targets of a Markdown page that point into the repository (no URLs, no in-page anchors)."""
    return [target.split("#")[0] for target in LINK.findall(page.read_text())
            if not target.startswith(("http://", "https://", "mailto:", "#"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    missing = [target for target in relative_links(page) if not (page.parent / target).exists()]
    assert missing == [], f"{page.relative_to(REPO)} links to files that do not exist: {missing}"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](docs/missing.md#part) [web](https://example.org) [here](#top)")
    assert relative_links(page) == ["page.md", "docs/missing.md"]


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 1, "the README holds one Python example"
    return inspect.cleandoc("\n" + blocks[0])


def test_the_readme_python_example_runs_against_the_real_api(tmp_path, monkeypatch):
    calls = []

    def recording(function, result):
        def record(*args, **kwargs):
            inspect.signature(function).bind(*args, **kwargs)  # a renamed or reordered argument fails here
            calls.append((function.__name__, args))
            return result
        return record

    monkeypatch.chdir(tmp_path)
    for name in ("my.jsonl", "my_eval.jsonl"):  # the example's file names, filled from the kit's example data
        (tmp_path / name).write_text((REPO / "examples" / "own_data" / name.replace("my_", "").replace(
            "my", "train")).read_text())
    monkeypatch.setattr(sdft_core.train, "train", recording(sdft_core.train.train, None))
    monkeypatch.setattr(sdft_core.eval.evaluate, "evaluate_model",
                        recording(sdft_core.eval.evaluate.evaluate_model, {"eval": {"accuracy": 0.0}}))
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    assert [name for name, _ in calls] == ["train", "train", "evaluate_model", "evaluate_model", "evaluate_model"]
    config, examples, folder = calls[0][1]
    assert (config.method, len(examples) > 0, folder.endswith("runs/sft")) == ("sft", True, True)
