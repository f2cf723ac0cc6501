"""The ``ddsp-pd`` command line: one click group, each command in ``ddsp_pd/commands/``."""

from __future__ import annotations

import importlib
import os

import click

from ddsp_pd import tf_quiet

# TensorFlow's C++ start-up chatter (CUDA probing on CPU-only machines) is noise for CLI users;
# it must be set before TensorFlow is imported, which the commands do lazily.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Each entry: command name -> module in ddsp_pd.commands that defines a click command `command`.
# Imported lazily so that `ddsp-pd --help` does not pay for TensorFlow.
_COMMANDS = {
    "render": "Render timbre transfer of one audio (or features) file.",
    "info": "Describe a checkpoint: era, sizes, rates, statistics.",
    "serve": "Run the OSC service that the Pd patch talks to.",
    "live": "Play live: audio (or notes) in, timbre transfer out, through an audio device.",
    "train": "Train a model on a folder of audio; write a ddsp-format checkpoint.",
    "export": "Export a VST-config checkpoint as a .tflite the DDSP-VST plugin loads.",
    "patch": "Print where the Pd patches are.",
    "models": "The model library: download the pretrained models, import your own.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        try:
            module = importlib.import_module(f"ddsp_pd.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"ddsp_pd.commands.{name}":
                return _unavailable(name)
            raise
        command = module.command
        if not any(param.name == "verbose" for param in command.params):
            command.params.append(_verbose_option())
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(sorted(_COMMANDS.items()))


def _unavailable(name: str) -> click.Command:
    @click.command(name=name, help=_COMMANDS[name])
    def stub() -> None:
        raise click.ClickException(f"'{name}' is not available in this version of ddsp-pd.")

    return stub


_VERBOSE_HELP = "Show TensorFlow's start-up messages on stderr."
_VERBOSE_KEY = "ddsp_pd.verbose"  # in ctx.meta, which a command's context shares with the group's


def _show_tensorflow_messages(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_VERBOSE_KEY] = True
        tf_quiet.uninstall()


def _verbose_option() -> click.Option:
    # Eager and not passed to the command: each command gets it without declaring it.
    return click.Option(
        ["--verbose"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_show_tensorflow_messages,
        help=_VERBOSE_HELP,
    )


@click.group(
    cls=_LazyGroup,
    params=[_verbose_option()],
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="ddsp-pd")
@click.pass_context
def main(ctx: click.Context) -> None:
    """DDSP timbre transfer for Pure Data: render from the shell or serve the Pd patch over OSC."""
    # The group runs before its command's options are parsed, so a command's --verbose can
    # still take the hook away again; TensorFlow itself is imported only by the command.
    if not ctx.meta.get(_VERBOSE_KEY):
        tf_quiet.install()
        ctx.call_on_close(tf_quiet.uninstall)
