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



def register_model_envs(model: str) -> None:
    """Registers a model's three env ids (done here for every built-in model; models/custom.py's user models
    call it once they are in the registry)."""
    spec = MODELS[model]
    ENV_IDS[model], GUIDE_ENV_IDS[model], MIXED_ENV_IDS[model] = spec.env_id, spec.guide_env_id, spec.mixed_env_id
    for env_id, entry, kwargs in ((spec.env_id, "tap_env:TapQuantEnv", {}),
                                  (spec.guide_env_id, "tap_env:TapQuantEnvV0", {"tmax_rule": "guide"}),
                                  (spec.mixed_env_id, "mixed:MixedKEnv", {})):
        if env_id not in registry:
            register(
                id=env_id,
                entry_point=f"envs.{entry}",
                kwargs={"model": model, **kwargs},
                # one step per approximated layer: at most all quantized layers
                max_episode_steps=len(quant_layer_names(model)),
            )


for _model in list(MODELS):
    register_model_envs(_model)
