"""A command peer is contained (issue 27, item 3): its process group is killed on timeout, only its
stderr's tail is kept, an output of another size than the input times its scale fails that input
(before it is decoded), and peer.command is checked on the driver."""
import os
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from actors.peers import CommandFailed, CommandModel
from jobs.cli import main as cli
from jobs.config import load_config
from jobs.specs import peer_spec


def _peer(command, *overrides):
    return peer_spec(load_config([], ["peer.kind=command", f"peer.command={command}", *overrides]))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\nState:\tZ" not in status.read()  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_timed_out_command_takes_its_children_with_it(tmp_path):
    pids = tmp_path / "child.pid"
    script = tmp_path / "spawner.py"
    script.write_text("import subprocess, sys, time\n"
                      f"child = subprocess.Popen(['sleep', '1000'])\nopen({str(pids)!r}, 'w').write(str(child.pid))\n"
                      "time.sleep(1000)\n")
    model = CommandModel(_peer(f"{sys.executable} {script} {{input}} {{output}}", "peer.timeout_s=2"))
    with pytest.raises(CommandFailed, match="peer.timeout_s=2"):
        model.upscale(torch.rand(1, 3, 4, 4), (16, 16))
    child = int(pids.read_text())
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the command's own child outlived the timeout"


def test_only_the_tail_of_a_failing_commands_stderr_is_kept(tmp_path):
    script = tmp_path / "chatty.py"
    script.write_text("import sys\nsys.stderr.write('x' * 5_000_000 + 'THE END')\nsys.exit(3)\n")
    model = CommandModel(_peer(f"{sys.executable} {script} {{input}} {{output}}"))
    with pytest.raises(CommandFailed) as failure:
        model.upscale(torch.rand(1, 3, 4, 4), (16, 16))
    assert "exited 3" in str(failure.value) and str(failure.value).endswith("THE END")
    assert len(str(failure.value)) < 600


@pytest.mark.parametrize("side, ok", [(1, False), (64, True), (66, True), (1024, False)])
def test_a_command_output_must_be_the_input_times_its_scale(tmp_path, side, ok):
    script = tmp_path / "fixed.py"
    script.write_text("import sys\nfrom PIL import Image\n"
                      f"Image.new('RGB', ({side}, {side})).save(sys.argv[2])\n")
    model = CommandModel(_peer(f"{sys.executable} {script} {{input}} {{output}}"))
    x = torch.rand(1, 3, 16, 16)  # x4: 64x64 native
    if ok:
        assert tuple(model.upscale(x, (64, 64)).shape) == (1, 3, 64, 64)
    else:
        with pytest.raises(CommandFailed, match=f"wrote a {side}x{side} image for a 64x64 output"):
            model.upscale(x, (64, 64))


COMMANDS = [
    ("{input} {output}", "is not a YAML value"),
    ("prog {input} {output} #x", "' #' starts a YAML comment"),
    ("\"prog 'x {input} {output}\"", "No closing quotation"),
    ("prog {} {input} {output}", "unknown placeholder(s) {}"),
    ("prog {width} {input} {output}", "unknown placeholder(s) width"),
    ("prog {input {output}", "write a literal brace as {{ or }}"),
]


@pytest.mark.parametrize("command, message", COMMANDS)
def test_peer_command_is_checked_on_the_driver_in_one_line(tmp_path, capsys, command, message):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    status = cli(["backfill", "--config", "local", f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                  "peer.kind=command", f"peer.command={command}", "--dry-run"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err
    assert not os.path.exists(tmp_path / "out")
