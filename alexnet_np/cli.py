"""The command-line parser the scripts share: every refusal is one line, ``error: ...``, exit 2.

argparse prints its usage before the error; a user who typed one wrong value needs only
the line that names it. Values are checked as they are parsed, by ``type=`` records from
``alexnet_np.accepts`` (``type=POSITIVE_INT``, ``type=Several(NON_NEGATIVE_INT)``, ...),
which say in the help what they accept and refuse with ``--option value: what is allowed``:

    parser = Parser(prog="python train.py")
    parser.add_argument("--log-every", type=POSITIVE_INT, ...)
    parser.parse_args(["--log-every", "0"])   # stderr: "error: --log-every 0: a whole number >= 1"; exit 2
"""
import argparse
import os
import re
import sys

from .accepts import Accepts


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as written, each checked option followed by what it accepts (``--lr X ... [a finite
    number > 0]``). The methods are the hooks argparse's own formatter classes override."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action) or ""
        if isinstance(action.type, Accepts):
            text = f"{text} [{action.type.describe()}]".strip()
        return text

    def _get_default_metavar_for_optional(self, action):
        if isinstance(action.type, Accepts):
            return action.type.metavar()
        return super()._get_default_metavar_for_optional(action)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line naming the option."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        for key in ("description", "epilog"):   # often a docstring's first line: its ``code`` marks go
            if kwargs.get(key):
                kwargs[key] = re.sub(r"``(.+?)``", r"\1", kwargs[key])
        super().__init__(**kwargs)

    def error(self, message):
        # argparse says "argument --x/--no-x: MESSAGE"; an accepts record's MESSAGE starts with
        # the value given, so "--x MESSAGE" reads "--x 0: a whole number >= 1".
        match = re.fullmatch(r"argument ([^/:\s]+)(?:/\S+)?: (.*)", message, flags=re.S)
        if match:
            message = f"{match[1]} {match[2]}"
        self.exit(2, f"error: {' '.join(message.splitlines())}\n")


def output_file(text):
    """argparse ``type=`` for a file to write: its folder must exist and it must not be a folder."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a file to write, not a folder")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{text}: a file in an existing folder ({folder} does not exist)")
    return text


def existing_file(text):
    """argparse ``type=`` for a file to read."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a file, not a folder")
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def existing_path(text):
    """argparse ``type=`` for a file or folder to read."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return text


def folder_to_write(text):
    """argparse ``type=`` for a folder to create or fill: not an existing file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: a folder, but a file of that name exists")
    return text


def fail(message):
    """Print ``error: message`` (one line) and return exit status 2, for a script's ``main``."""
    print(f"error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    return 2
