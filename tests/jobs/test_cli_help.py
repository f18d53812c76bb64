"""`op4ksr help`, `op4ksr help COMMAND` (the same as `op4ksr COMMAND --help`) and an unknown command."""
import pytest

from jobs.cli import main


def test_help_command_prints_that_commands_options(capsys):
    with pytest.raises(SystemExit) as done:  # argparse exits 0 after printing --help
        main(["help", "cost"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: op4ksr cost") and "--catalog OUTPUT_URI" in out


def test_help_alone_lists_the_commands_and_an_unknown_one_is_refused(capsys):
    assert main(["help"]) == 0
    assert "op4ksr help COMMAND" in capsys.readouterr().out
    assert main(["help", "upscal"]) == 2
    assert "unknown command 'upscal'" in capsys.readouterr().err
