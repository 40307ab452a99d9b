"""What every command shares: options, quiet libraries, and errors as one line with exit 1."""

from __future__ import annotations

import logging
import os
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import typer

from beit_tools.cli.render import print_error

DebugOption = typer.Option(False, "--debug", help="Show the full traceback on failure.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")
TrustOption = typer.Option(
    False,
    "--trust-checkpoint",
    help="Load the file with full pickle, which can run code from it. Only for files you trust.",
)


def quiet_libraries(hub_progress: bool = False) -> None:
    """Our own output is the report; library chatter and progress bars would interleave with it.

    `hub_progress` keeps huggingface_hub's upload bars possible (push turns them on for the upload only).
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    if not hub_progress:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup on the way out runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def reported_errors(debug: bool, interrupted: str = "interrupted; nothing was written") -> Iterator[None]:
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
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        print_error(interrupted, None)
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


VariantOption = typer.Option(
    None, "--variant", help="An official checkpoint by name, downloaded and cached (`beit-tools variants` lists them)."
)
MirrorOption = typer.Option(
    None,
    "--mirror",
    envvar="BEIT_TOOLS_MIRROR",
    help="Base address that replaces every official file's host (an internal mirror). Env: BEIT_TOOLS_MIRROR.",
)
CacheDirOption = typer.Option(
    None, "--cache-dir", help="Download cache (default: $HF_HOME/beit-tools, i.e. ~/.cache/huggingface/beit-tools)."
)
OfflineOption = typer.Option(
    False, "--offline", help="Use cached files only; never touch the network (also HF_HUB_OFFLINE=1)."
)
SOURCE_HELP = "The checkpoint: a path (.pth/.pt/.bin/.safetensors), an http(s) URL, or hf://ORG/REPO[@REV]/FILE."


def go_offline(offline: bool) -> None:
    """--offline: switch huggingface_hub off too, before it is imported (it reads the switch once, at import)."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"


def fetch_source(source: str | None, variant: str | None, mirror: str | None, cache_dir, offline: bool):
    """Resolve SOURCE/--variant to a local file, with a download bar on stderr when something is fetched."""
    from beit_tools.cli import render
    from beit_tools.core.sources import Callbacks, SourceRequest, resolve

    request = SourceRequest(source, variant, mirror, cache_dir, offline)
    with render.byte_progress("downloading") as (start, advance):
        callbacks = Callbacks(start, advance, lambda: render.note("waiting for another process downloading it"))
        return resolve(request, callbacks)


class FeatureIndices(str, Enum):
    faithful = "faithful"
    transformers = "transformers"


FeatureIndicesOption = typer.Option(
    FeatureIndices.faithful,
    "--feature-indices",
    help="Segmentation: 'faithful' makes stock transformers feed its FPN the original's blocks (adding a "
    "pass-through layer where needed); 'transformers' writes the Hub models' out_indices as they are.",
)
PoolScalesOption = typer.Option(
    None, "--pool-scales", help="Segmentation: PSP pool scales, e.g. 1,2,3,6, when the file does not state them."
)


def parse_pool_scales(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        scales = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        scales = ()
    if not scales or min(scales) < 1:
        raise typer.BadParameter(f"{text!r} is not a list of positive integers like 1,2,3,6")
    return scales


class ArchName(str, Enum):
    beit = "beit"
    data2vec_vision = "data2vec-vision"


class Normalization(str, Enum):
    half = "half"
    imagenet = "imagenet"


ArchOption = typer.Option(
    None,
    "--arch",
    help="The transformers model type to write: beit, or data2vec-vision (Data2VecVision* classes). "
    "Default: what the file shows, else beit.",
)
NormalizationOption = typer.Option(
    None,
    "--normalization",
    help="Input normalisation the model was trained with: half (mean = std = 0.5, BEiT v1) or imagenet "
    "(BEiT v2, ImageNet-1k pretraining, ADE20K). Default: what the file or the registry shows.",
)
