"""How the `tiletune` commands report what went wrong: one line on stderr, never a traceback.

`one_line_errors` wraps a command: a `TiletuneError` (a user's mistake) is one `error: ...` line
and exit status 2; anything else is a bug, still one line (exit 1) with its traceback on request
(`TILETUNE_TRACEBACK=1`); Ctrl-C exits 130, and a closed output pipe (`| head`) ends quietly.
`warnings_as_lines` prints each warning a command raised as one `warning: ...` line. `tiletune` (cli.py) and `tiletune db` (db_cli.py) share them.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings

import click

from tiletune.errors import TiletuneError


def one_line(message: str) -> str:
    """`message` with its lines joined, as the CLI prints every error."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def one_line_errors(fn):
    """Turn tiletune's errors into one line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TiletuneError as error:
            click.echo(f"error: {one_line(str(error))}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; every finished batch is in the DB", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (`tiletune list | head`): nothing left to say, and Python's
            # own flush of stdout at exit must not fail on the closed pipe either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except click.ClickException:  # click's own usage errors: the group prints them on one line
            raise
        except Exception as error:  # a bug, not a mistake: still one line, the traceback on request
            if os.environ.get("TILETUNE_TRACEBACK"):
                raise
            click.echo(f"error: internal error, please report it: {type(error).__name__}: {one_line(str(error))} "
                       "(set TILETUNE_TRACEBACK=1 for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def warnings_as_lines(fn):
    """Print each distinct warning raised by a command as one `warning: ...` line on stderr
    (rather than Python's file:line form and a source line, which reads like a traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    click.echo(f"warning: {message}", err=True)

    return wrapper
