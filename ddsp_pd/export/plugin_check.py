"""Which models the DDSP-VST plugin can run, checked on the config before any export work.

The plugin refuses a model unless it has exactly the three inputs and four outputs of its
contract with the sizes it is built for (``ModelLibrary::validateModel``: 60 harmonics,
65 noise magnitudes, a GRU state of 512 floats). It also assumes, without checking, the
rates of ``vst.gin``: 16 kHz audio, 320-sample hops (50 frames/s) and 1024-sample power
frames; a model made for other rates loads but plays wrongly, so those only warn.
"""

from __future__ import annotations

from ddsp_pd.config import ModelConfig
from ddsp_pd.errors import CheckpointError
from ddsp_pd.kinds.tflite import N_HARMONICS, N_NOISE_BANDS, STATE_SIZE

__all__ = ["PLUGIN_RATES", "check_exportable", "rate_warnings"]

#: The rates the plugin runs every model at (``util/Constants.h``).
PLUGIN_RATES = {"sample_rate": 16000, "frame_rate": 50.0, "power_frame_size": 1024}


def check_exportable(config: ModelConfig, where: str = "this model") -> None:
    """Raise :class:`CheckpointError` (one line naming every reason) unless the plugin
    would accept an export of ``config``."""
    if config.era != "vst":
        raise CheckpointError(
            f"{where} is a ddsp {config.era} model conditioned on loudness; the DDSP-VST "
            "plugin runs power models only (ddsp's vst.gin; ddsp-pd train --config vst)"
        )
    problems = []
    if config.n_harmonics != N_HARMONICS:
        problems.append(f"{N_HARMONICS} harmonics (it has {config.n_harmonics})")
    if config.n_noise_bands != N_NOISE_BANDS:
        problems.append(f"{N_NOISE_BANDS} noise bands (it has {config.n_noise_bands})")
    if config.rnn_type != "gru":
        problems.append(f"a GRU (it has {config.rnn_type!r})")
    elif config.rnn_channels != STATE_SIZE:
        problems.append(f"a GRU state of {STATE_SIZE} (it has {config.rnn_channels})")
    if sorted(config.input_keys) != ["f0_scaled", "pw_scaled"]:
        problems.append(f"inputs f0_scaled and pw_scaled (it has {', '.join(config.input_keys)})")
    if problems:
        raise CheckpointError(
            f"the DDSP-VST plugin would refuse {where}: it needs " + ", ".join(problems)
        )


def rate_warnings(config: ModelConfig) -> list[str]:
    """One line per rate that differs from the plugin's fixed ones (it does not check)."""
    found = {
        "sample_rate": config.sample_rate,
        "frame_rate": float(config.frame_rate),
        "power_frame_size": config.power_frame_size,
    }
    names = {
        "sample_rate": "sample rate",
        "frame_rate": "frame rate",
        "power_frame_size": "power frame size",
    }
    return [
        f"the DDSP-VST plugin runs models at {names[key]} {PLUGIN_RATES[key]:g}; this model's "
        f"is {found[key]:g}, so the plugin will play it wrongly"
        for key in PLUGIN_RATES
        if found[key] != PLUGIN_RATES[key]
    ]
