"""Gymnasium registration: `import envs; gym.make("TapQuant-LeNet5-v1")`.

Also works without the import as `gym.make("envs:TapQuant-LeNet5-v1")`.
`-v1` is the current environment (the clip is a decision); `-v0` is the
guide's (tmax = p90 + 10, 29 features): see TapQuantEnv's Version History.
`TapQuant-<Model>-Mixed-v0` chooses each layer's K under a bit budget
(envs/mixed.py).
"""

from gymnasium.envs.registration import register, registry

from models import MODELS, quant_layer_names

ENV_IDS = {name: m.env_id for name, m in MODELS.items()}
GUIDE_ENV_IDS = {name: m.guide_env_id for name, m in MODELS.items()}
MIXED_ENV_IDS = {name: m.mixed_env_id for name, m in MODELS.items()}

for _model in MODELS:
    for _env_id, _entry, _kwargs in ((ENV_IDS[_model], "tap_env:TapQuantEnv", {}),
                                     (GUIDE_ENV_IDS[_model], "tap_env:TapQuantEnvV0", {"tmax_rule": "guide"}),
                                     (MIXED_ENV_IDS[_model], "mixed:MixedKEnv", {})):
        if _env_id not in registry:
            register(
                id=_env_id,
                entry_point=f"envs.{_entry}",
                kwargs={"model": _model, **_kwargs},
                # one step per approximated layer: at most all quantized layers
                max_episode_steps=len(quant_layer_names(_model)),
            )
