"""The README's Python blocks run as written, so the quick start cannot rot."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert "generated M:" in capsys.readouterr().out
    assert type(namespace["plain"]).__name__ == "MyNet"
    assert (tmp_path / "ckpt" / "qt_config.json").is_file()
    qt, qt2, x = namespace["qt"], namespace["qt2"], namespace["x"]
    qt.eval(), qt2.eval()
    assert (qt(x) - qt2(x)).abs().max() == 0


def test_readme_commands_are_the_ci_commands():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest'
    assert test_cmd in text and test_cmd in ci
