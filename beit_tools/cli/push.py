"""`beit-tools push`: gate with verify, write the model card, publish through huggingface_hub."""

from __future__ import annotations

from pathlib import Path

import typer

from beit_tools.cli.common import DebugOption, JsonOption, TrustOption, quiet_libraries, reported_errors


def push(
    folder: Path = typer.Argument(..., help="The folder `beit-tools convert` wrote."),
    repo: str = typer.Option(..., "--repo", help="Target repository, NAMESPACE/NAME (created if missing)."),
    private: bool = typer.Option(
        False, "--private", help="Create the repository private (an existing one keeps its visibility)."
    ),
    revision: str | None = typer.Option(None, "--revision", help="Branch to commit to (created from main if missing)."),
    create_pr: bool = typer.Option(
        False, "--create-pr", help="Open a pull request instead of committing to the branch."
    ),
    commit_message: str | None = typer.Option(None, "--commit-message", help="Commit title."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Hub token (default: HF_TOKEN, then the saved login). A token typed here stays in shell history.",
    ),
    license_id: str | None = typer.Option(
        None,
        "--license",
        help="License of the weights for the card (default: mit for official checkpoints, none otherwise).",
    ),
    card_overwrite: bool = typer.Option(
        False, "--card-overwrite", help="Replace the folder's own README.md with a new card."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the repo, the files and the card; send nothing."),
    skip_verify: bool = typer.Option(
        False, "--skip-verify", help="Publish without the verify gate (the card says so)."
    ),
    trust_checkpoint: bool = TrustOption,
    json_output: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Publish a converted folder to the Hugging Face Hub with a model card, after verify passes.

    Example: `beit-tools push beit-base-patch16-224 --repo my-org/beit-base-patch16-224 --dry-run`.
    Exit 0 when published (or nothing changed), 1 when refused or failed.
    """
    quiet_libraries(hub_progress=not json_output)
    from beit_tools.cli import render

    with reported_errors(debug, interrupted="interrupted; nothing was published"):
        from beit_tools.core.push import PushOptions, prepare, publish

        options = PushOptions(
            folder=folder,
            repo_id=repo,
            private=private,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            token=token,
            dry_run=dry_run,
            skip_verify=skip_verify,
            license=license_id,
            card_overwrite=card_overwrite,
            trust_checkpoint=trust_checkpoint,
        )
        with render.hub_progress(enabled=False):
            plan = prepare(options)
        if skip_verify:
            render.warn("--skip-verify: the folder was NOT verified; the card says it was published unverified")
        if dry_run:
            if json_output:
                render.print_json(plan.to_dict())
            else:
                render.render_push_plan(plan)
            return
        with render.hub_progress(enabled=not json_output):
            result = publish(plan, options, status=render.note)
        if json_output:
            render.print_json(result.to_dict())
        else:
            render.render_push(result)
