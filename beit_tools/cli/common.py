"""What every command shares: options, quiet libraries, and errors as one line with exit 1."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from beit_tools.cli.render import print_error

DebugOption = typer.Option(False, "--debug", help="Show the full traceback on failure.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
TrustOption = typer.Option(
    False,
    "--trust-checkpoint",
    help="Load the file with full pickle, which can run code from it. Only for files you trust.",
)


def quiet_libraries() -> None:
    """Our own output is the report; library chatter and progress bars would interleave with it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup on the way out runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn failures into one line on stderr and exit 1; `--debug` re-raises for the traceback.

    SIGINT and SIGTERM interrupt the command like an exception, so temporary output is removed.
    """
    from beit_tools.errors import BeitToolsError

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except typer.Exit:
        raise
    except BeitToolsError as e:
        if debug:
            raise
        print_error(e.message, e.hint)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as e:
        print_error("interrupted; nothing was written", None)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    except Exception as e:
        if debug:
            raise
        print_error(
            f"unexpected failure: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            "rerun with --debug for the traceback, and please report it",
        )
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
