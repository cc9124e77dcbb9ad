"""Run the ``irc`` command in-process, capturing its exit code and output."""

from __future__ import annotations

from irc.tools.cli import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``irc *argv``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
